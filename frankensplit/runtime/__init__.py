"""Deployment path, one package per side: `edge` (bundle export, the bundle format and a
torch-free edge client) and `server` (the HTTP inference server).

```
export (torch):  FrankenSplit --> edge bundle   (g_a as ONNX, integer CDF tables, preprocessing)
                              --> server bundle (codec safetensors, teacher name)
edge (no torch): image --PIL/numpy--> x --onnxruntime g_a--> y --rANS--> packet --HTTP--> server
server (torch):  packet --ServerPart: check, rANS--> y_hat --g_s--> h_hat --teacher tail--> top-k
```

This package ``__init__`` imports nothing: the edge client (`frankensplit.runtime.edge.client`)
must load without torch, so every module is imported explicitly by what needs it. The load and
fault harness used by benchmarks and tests lives outside the package, in ``benchmarks/harness``.
"""

__all__: list[str] = []

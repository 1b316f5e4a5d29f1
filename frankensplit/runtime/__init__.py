"""Deployment path, one package per side: `edge` (bundle export, the bundle format and a
torch-free edge client) and `server` (the HTTP inference server).

```
export (torch):  FrankenSplit --> edge bundle   (g_a as ONNX, integer CDF tables, preprocessing)
                              --> server bundle (codec safetensors, teacher name)
                              --> server-onnx   (g_s + tail as ONNX, the same tables; optional)
edge (no torch): image --PIL/numpy--> x --onnxruntime g_a--> y --rANS--> packet --HTTP--> server
server (torch):  packet --ServerPart: check, rANS--> y_hat --g_s--> h_hat --teacher tail--> top-k
server (ONNX, `serve --onnx`, no torch): the same path, g_s + tail exported as one ONNX graph
```

This package ``__init__`` imports nothing: the edge client (`frankensplit.runtime.edge.client`)
must load without torch (and so must the ONNX server, `server.onnx_server`), so every module is
imported explicitly by what needs it. `sessions` makes both sides' ONNX Runtime sessions. The
load and fault harness used by benchmarks and tests lives outside the package, in
``benchmarks/harness``.
"""

__all__: list[str] = []

"""Deployment path: edge bundle export, a torch-free edge client, and an HTTP inference server.

```
export (torch):  FrankenSplit --> edge bundle   (g_a as ONNX, integer CDF tables, preprocessing)
                              --> server bundle (codec safetensors, teacher name)
edge (no torch): image --PIL/numpy--> x --onnxruntime g_a--> y --rANS--> packet --HTTP--> server
server (torch):  packet --rANS--> y_hat --g_s--> h_hat --teacher tail--> top-k JSON
```

This package ``__init__`` imports nothing: the edge client (`frankensplit.runtime.client`) must
load without torch, so every module is imported explicitly by what needs it.
"""

__all__: list[str] = []

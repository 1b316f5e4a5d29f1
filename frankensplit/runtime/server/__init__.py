"""The server side: the HTTP app (`app`), the service behind it (`service`: validation through
`ServerPart`, `batching`, `metrics`), the decoder sandbox (`sandbox`), connection limits
(`connections`), decoders grouped by encoder (`routing`), loading the server half (`loading`) and
its ONNX copy, served without torch (`onnx_server`).

The app's public names are exported lazily (``from frankensplit.runtime.server import
create_app``): importing a module of this package, such as the torch-free `sandbox` that the
decoder worker process runs, must not import the app, torch or FastAPI; and the app imports torch
only to load or run a torch model.
"""

from frankensplit._lazy import lazy_exports

__all__ = ["ConnectionLimits", "ServerConfig", "create_app", "run_in_thread"]

lazy_exports(__name__, {"frankensplit.runtime.server.app": __all__})

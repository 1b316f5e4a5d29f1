"""Shared test set-up: offline hub, the shared data folder, tiny teachers of every family, and the
models, bundles and edge clients the runtime tests share (session-scoped: built once)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may reach a model hub

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
TINY16 = SHARED / "fixtures" / "tiny16"

#: A tiny timm configuration per family: enough structure for the split, seconds on a CPU.
TINY_TEACHERS: dict[str, tuple[str, dict]] = {
    "efficientnet": ("tf_efficientnet_lite0", {}),
    "resnet": ("resnet18", {}),
    "convnext": ("convnext_atto", {}),
    "swin": ("swin_tiny_patch4_window7_224",
             {"embed_dim": 24, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2)}),
}


def _load_tool(name: str) -> ModuleType:
    """A maintainer tool of ``tools/`` as a module (registered, so its dataclasses resolve)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


#: ``tools/golden_packets.py``: golden packets and the tie-aware packet comparison.
GOLDEN_TOOL = _load_tool("golden_packets")


#: Variables third-party modules set once, when first imported (pytest's per-test variable;
#: scikit-learn, which grad-cam imports, sets the two KMP ones; torch's inductor extends the
#: library path and names its cache when compressai first imports it): not state a test or our
#: library leaves behind.
_IMPORT_TIME_VARIABLES = {"PYTEST_CURRENT_TEST", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK",
                          "LD_LIBRARY_PATH", "TORCHINDUCTOR_CACHE_DIR"}


def _environ() -> dict[str, str]:
    """The environment, less the variables of `_IMPORT_TIME_VARIABLES`."""
    return {k: v for k, v in os.environ.items() if k not in _IMPORT_TIME_VARIABLES}


@pytest.fixture(autouse=True)
def leaves_no_process_state():
    """Every test (and every library call in it) leaves torch's thread count and the environment
    as it found them: later tests' results, golden packets among them, must not depend on what ran
    before. A module-scoped fixture may pin a thread count for its module and restore it."""
    import torch

    threads, environ = torch.get_num_threads(), _environ()
    yield
    leaked = []
    if torch.get_num_threads() != threads:
        leaked.append(f"torch threads {threads} -> {torch.get_num_threads()}")
        torch.set_num_threads(threads)
    if _environ() != environ:
        changed = sorted({k for k, _ in set(environ.items()) ^ set(_environ().items())})
        leaked.append(f"environment changed: {changed}")
        for key in changed:
            os.environ.pop(key, None)
        os.environ.update({k: environ[k] for k in changed if k in environ})
    assert not leaked, f"the test left process-wide state behind: {leaked}"


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after (`frankensplit.threads.torch_threads`):
    small tensors on a shared 2-core box, and one reduction order for results compared exactly.
    A module takes it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    from frankensplit.threads import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture
def tiny16() -> Path:
    """The 16 labelled validation images of ../shared/data (skips when absent)."""
    if not (TINY16 / "labels.csv").is_file():
        pytest.skip(f"shared fixtures not found at {TINY16} (clone with ../shared beside the repo)")
    return TINY16


#: The model the runtime tests serve: real teacher (offline weights), random seeded codec.
RUNTIME_MODEL_ID = "fs-lite0-untrained"


@pytest.fixture(scope="session")
def lite0_model():
    """``fs-lite0-untrained``, shared by the runtime tests (read-only: never train or reload it)."""
    from frankensplit.models.zoo import create_model

    return create_model(RUNTIME_MODEL_ID)


@pytest.fixture(scope="session")
def lite0_bundle(lite0_model, tmp_path_factory):
    """Edge and server bundles of `lite0_model` (``frankensplit export``)."""
    from frankensplit.runtime.edge.export import export_bundle

    return export_bundle(lite0_model, tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def edge_client(lite0_bundle):
    """The torch-free edge client on `lite0_bundle` (one onnxruntime thread)."""
    from frankensplit.runtime.edge.client import EdgeClient

    return EdgeClient(lite0_bundle.edge_dir, threads=1)


@pytest.fixture(scope="session")
def default_model():
    """The zoo's default (trained) model, read-only: what the runtime tests serve and code.

    Its answers depend on the image (unlike ``fs-lite0-untrained``, which answers one class for
    every photo), so a test comparing answers can see a wrong one.
    """
    from frankensplit.models.zoo import MODELS, create_model, default_model_id

    if not MODELS.get(default_model_id()).trained:
        pytest.skip("the zoo's default has no trained weights in this checkout")
    return create_model(default_model_id())


@pytest.fixture(scope="session")
def default_bundle(default_model, tmp_path_factory):
    """Edge and server bundles of `default_model` (``frankensplit export``)."""
    from frankensplit.runtime.edge.export import export_bundle

    return export_bundle(default_model, tmp_path_factory.mktemp("default_bundle"))


@pytest.fixture(scope="session")
def default_client(default_bundle):
    """The torch-free edge client on `default_bundle` (one onnxruntime thread)."""
    from frankensplit.runtime.edge.client import EdgeClient

    return EdgeClient(default_bundle.edge_dir, threads=1)


#: The fixed-rate reference of the runtime tests: a shipped fixed-rate model (one rate, bitstream
#: version 1, one table set), the zoo default before the variable-rate ``fs-lite0-vr``, and the
#: model whose encoder the encoder-reuse entries (``fs-lite0-l4.lite1``, ...) share.
FIXED_MODEL = "fs-lite0-l4"


@pytest.fixture(scope="session")
def fixed_model():
    """`FIXED_MODEL`, read-only: what tests of the fixed-rate path (version-1 packets, one coder)
    code and serve, beside `default_model`."""
    from frankensplit.models.zoo import MODELS, create_model

    if FIXED_MODEL not in MODELS or not MODELS.get(FIXED_MODEL).trained:
        pytest.skip(f"{FIXED_MODEL} has no trained weights in this checkout")
    return create_model(FIXED_MODEL)


@pytest.fixture(scope="session")
def fixed_bundle(fixed_model, tmp_path_factory):
    """Edge and server bundles of `fixed_model` (``frankensplit export``)."""
    from frankensplit.runtime.edge.export import export_bundle

    return export_bundle(fixed_model, tmp_path_factory.mktemp("fixed_bundle"))


@pytest.fixture(scope="session")
def second_model(default_model):
    """Another trained zoo model of the default's method (FrankenSplit) and teacher, its own
    encoder (no reuse), built on the others teacher object: served beside the default under another
    id, its answers differ from the default's.

    Not necessarily of the default's architecture: beside the variable-rate default it is a
    fixed-rate model, so one server decodes version-1 and version-2 packets side by side.
    """
    from frankensplit.models.zoo import MODELS, ZOO_DIR, load_weights

    default = MODELS.get(default_model.model_id).architecture
    others = [MODELS.get(m) for m in MODELS.names() if m != default_model.model_id]
    others = [e for e in others if e.trained and e.architecture.teacher == default.teacher
            and e.architecture.method == default.method and e.architecture.reuses is None]
    if not others:
        pytest.skip("the zoo ships no other trained model of the default's method and teacher")
    entry = others[0]
    model = entry.architecture.build(entry.model_id, backbone=default_model.teacher)
    model.default_rate = entry.default_rate  # as `create_model` sets it
    return load_weights(model, ZOO_DIR / entry.weights, entry.sha256)

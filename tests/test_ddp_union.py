"""DDP equals one process on the union of the ranks' batches.

It caught a real bug: ``loop._start`` once turned g_s to channels_last *after* wrapping the model in
DistributedDataParallel, so the averaged gradient of g_s.body.0.weight reached the optimizer in the
wrong element order (torch warns "Grad strides do not match bucket view strides").
"""

from __future__ import annotations

import torch

from frankensplit.config import load_config
from frankensplit.train import train
from tests.test_train import _need_fixtures, ddp_run  # noqa: F401 - autouse fixture


def test_ddp_equals_one_process_trained_on_the_union_of_the_ranks_batches(tmp_path, monkeypatch):
    """A single process replaying both ranks' batches of each step (each under that rank's RNG
    state, so with the same training noise), their losses averaged as DDP averages gradients,
    applies the gradients the ranks applied (codec and aux steps) and ends with their weights,
    within float tolerance. A rank on its own gradient, or a sum where the mean belongs, fails."""
    from frankensplit.train import loop
    from tests.ddp_worker import Recorder

    ranks, config, overrides = ddp_run(tmp_path)
    single = Recorder(loop, replay=[r["steps"] for r in ranks])
    handle = single.install(monkeypatch.setattr)
    try:
        train(load_config(config, overrides), tmp_path / "single", progress=False)
    finally:
        handle.remove()
    assert len(single.steps) == 4 and len(single.grads) == len(ranks[0]["grads"])
    for k, (ours, theirs) in enumerate(zip(single.grads, ranks[0]["grads"], strict=True)):
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert (a is None) == (b is None), (k, i)
            if a is not None:
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6 * float(a.abs().max()),
                                           msg=lambda m, k=k, i=i: f"step {k}, tensor {i}: {m}")
    reference = single.parameters()
    assert reference.keys() == ranks[0]["parameters"].keys()
    for name, p in reference.items():
        torch.testing.assert_close(ranks[0]["parameters"][name], p, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")

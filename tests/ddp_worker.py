"""What each rank of a DDP training run did, recorded for ``tests/test_train.py`` (not a test module).

Under torchrun it runs ``frankensplit train`` (the arguments after the output folder) and writes
``OUT/rank<r>.pt`` per rank: the batch and torch RNG state of every training step (each
``loop._step`` call), the gradients every optimizer step was about to apply (the codec's and the
entropy model's aux step), and the trained codec's parameters at the end::

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py OUT train --config ...

`Recorder` with ``replay`` is the single-process reference: it replaces each step's batch by the
ranks' batches of that step (each under its own RNG state, so the training noise is the same) and
averages their losses, which is what DDP's gradient averaging computes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

CODEC_PARTS = ("g_a", "entropy", "g_s")


class Recorder:
    """Wraps ``loop._step`` and ``loop._start`` and hooks every optimizer step.

    Args:
        loop: the ``frankensplit.train.loop`` module.
        replay: the ranks' recorded steps (one list per rank) to train on instead of the batches
            of this process's own loader; None records this process's own steps.
    """

    def __init__(self, loop: Any, replay: list[list[dict[str, Any]]] | None = None) -> None:
        self.loop = loop
        self.replay = replay
        self.steps: list[dict[str, Any]] = []
        self.grads: list[list[torch.Tensor | None]] = []
        self.runs: list[Any] = []
        self._step, self._start = loop._step, loop._start

    def step(self, run: Any, batch: Any) -> dict[str, torch.Tensor]:
        from frankensplit.train.objectives import Batch

        if self.replay is None:
            self.steps.append({"batch": {"x": batch.x, "s": batch.s}, "rng": torch.get_rng_state()})
            return self._step(run, batch)
        k = len(self.steps)
        self.steps.append({})
        parts = []
        for rank in self.replay:
            torch.set_rng_state(rank[k]["rng"])
            parts.append(self._step(run, Batch(**rank[k]["batch"])))
        return {key: sum(p[key] for p in parts) / len(parts) for key in parts[0]}

    def start(self, *args: Any, **kwargs: Any) -> Any:
        run = self._start(*args, **kwargs)
        self.runs.append(run)
        return run

    def hook(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        self.grads.append([None if p.grad is None else p.grad.detach().clone()
                           for group in optimizer.param_groups for p in group["params"]])

    def install(self, setattr_: Any = setattr) -> Any:
        """Patch the loop (with ``setattr_``, e.g. a monkeypatch's); returns the hook handle."""
        setattr_(self.loop, "_step", self.step)
        setattr_(self.loop, "_start", self.start)
        return register_optimizer_step_pre_hook(self.hook)

    def parameters(self) -> dict[str, torch.Tensor]:
        """The trained codec parameters of the (one) model trained."""
        (run,) = self.runs
        return {n: p.detach().clone() for n, p in run.model.named_parameters()
                if n.split(".", 1)[0] in CODEC_PARTS}


def main(out: Path, argv: list[str]) -> int:
    from frankensplit.cli import main as cli_main
    from frankensplit.train import loop
    from frankensplit.train.distributed import env_info

    recorder = Recorder(loop)
    recorder.install()
    rank = env_info().rank  # read before train() leaves the process group
    code = cli_main(argv)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"steps": recorder.steps, "grads": recorder.grads,
                "parameters": recorder.parameters()}, out / f"rank{rank}.pt")
    return code


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))

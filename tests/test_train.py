"""The training loop on CPU in seconds: run folder, resume determinism, encoder reuse, DDP, CLI.

Real EfficientNet-Lite0/Lite2 teachers (offline weights) on the tiny16 fixture images with 64x64
patches and a couple of steps: small enough for a unit test, real enough to catch layout,
checkpoint and seeding bugs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from frankensplit.config import load_config
from frankensplit.models.architecture import Architecture
from frankensplit.models.codec_file import codec_metadata, load_codec, save_codec
from frankensplit.threads import torch_threads
from frankensplit.train import train
from frankensplit.train.loop import MixedPrecisionForward
from frankensplit.train.start import cpu_has_bf16

REPO = Path(__file__).resolve().parents[1]
TINY16 = REPO.parent / "shared/data/fixtures/tiny16"

#: Two steps per epoch of 64x64 patches, batch 2, on 4 labelled images, no worker processes.
TINY = [
    f"data.train=[{TINY16}]", "data.train_limit=4", "data.workers=0", "teacher_weights=offline",
    "stages.0.batch_size=2", "stages.0.view=patch", "stages.0.patch_size=64",
    "stages.0.steps_per_epoch=2", "stages.0.epochs=1", "lmbda=[2]", "model_id=fs-test-l{lmbda}",
    "threads=1",
]


@pytest.fixture(autouse=True)
def _need_fixtures():
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16} (needs the shared data folder)")
    with torch_threads(1):  # tiny tensors: one thread avoids OpenMP contention on shared cores
        yield


def codec(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["codec"]


def test_two_steps_make_the_run_folder_with_a_loadable_best(tmp_path):
    cfg = load_config(None, [*TINY, "data.train_limit=8", "stages.0.batch_size=4",
                             f"data.val={TINY16}", "data.val_limit=1"])
    (summary,) = train(cfg, tmp_path, progress=False)
    run = tmp_path / "lmbda-2"
    for name in ("last.pt", "best.safetensors", "last.safetensors", "summary.json"):
        assert (run / name).is_file(), name
    assert (tmp_path / "config.json").is_file()
    assert summary["model_id"] == "fs-test-l2" and summary["best"]["epoch"] == 1
    (record,) = summary["history"]
    assert record["images"] == 8 and record["bpp_train"] > 0
    assert 0 <= record["val"]["top1"] <= 100 and record["val"]["images"] == 1
    model = Architecture("tf_efficientnet_lite0").build("fs-test-l2", teacher_weights=None)
    load_codec(model, run / "best.safetensors")
    assert model.entropy.ready


TWO_STAGES = """
stages:
  - {name: distill, epochs: 2, batch_size: 2, view: patch, patch_size: 64, steps_per_epoch: 2}
  - {name: second, epochs: 1, batch_size: 2, lr: 4.0e-4, view: patch, patch_size: 64,
     steps_per_epoch: 2}
"""


@pytest.mark.parametrize("crash_after", [1, 2], ids=["mid-stage", "stage-boundary"])
def test_resume_continues_exactly_where_an_uninterrupted_run_goes(tmp_path, monkeypatch,
                                                                   crash_after):
    config = tmp_path / "two.yaml"
    config.write_text(TWO_STAGES)
    overrides = [s for s in TINY if not s.startswith("stages.")]
    cfg = load_config(config, [*overrides, f"data.val={TINY16}", "data.val_limit=1", "seed=3"])
    train(cfg, tmp_path / "full", progress=False)

    from frankensplit.train import loop

    checkpoint, calls = loop._checkpoint, []

    def crashing(path, **state):  # the process dies right after the n-th epoch's checkpoint
        checkpoint(path, **state)
        calls.append(path)
        if len(calls) == crash_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_checkpoint", crashing)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    monkeypatch.setattr(loop, "_checkpoint", checkpoint)
    (summary,) = train(cfg, tmp_path / "cut", resume=True, progress=False)

    assert [(r["stage"], r["epoch"]) for r in summary["history"]] == [
        ("distill", 1), ("distill", 2), ("second", 1)]
    full, cut = codec(tmp_path / "full/lmbda-2"), codec(tmp_path / "cut/lmbda-2")
    assert full.keys() == cut.keys()
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    for name in ("best.safetensors", "last.safetensors"):
        a, b = load_file(tmp_path / "full/lmbda-2" / name), load_file(tmp_path / "cut/lmbda-2" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_a_run_started_under_the_flat_schema_resumes_with_its_config_rewritten(tmp_path, capsys):
    """Resuming reads the config given now, never one stored with the run (``last.pt`` holds
    weights, optimizer state and history; ``config.json`` is a record): a run whose config named
    ``teacher:`` at the top continues with that config moved into its ``architecture:``
    section, exactly as an uninterrupted run; the flat config itself is refused in one line
    that names the key's new place."""
    from frankensplit.cli import main

    flat, moved = tmp_path / "flat.yaml", tmp_path / "moved.yaml"
    flat.write_text("teacher: tf_efficientnet_lite0\nlmbda: [2]\n")
    moved.write_text("architecture:\n  teacher: tf_efficientnet_lite0\nlmbda: [2]\n")
    sets = [a for s in TINY if not s.startswith(("lmbda=", "stages.0.epochs="))
            for a in ("--set", s)]

    def cli(config: Path, out: str, epochs: int, *extra: str) -> int:
        return main(["train", "--config", str(config), *sets, "--set", f"stages.0.epochs={epochs}",
                     "--out", str(tmp_path / out), "--no-progress", *extra])

    assert cli(moved, "full", 2) == 0
    assert cli(moved, "cut", 1) == 0  # the first epoch of an interrupted run
    assert "config" not in torch.load(tmp_path / "cut/lmbda-2/last.pt", weights_only=True)
    capsys.readouterr()
    assert cli(flat, "cut", 2, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'teacher' moved to architecture.teacher" in err
    assert cli(moved, "cut", 2, "--resume") == 0
    full, cut = codec(tmp_path / "full/lmbda-2"), codec(tmp_path / "cut/lmbda-2")
    assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)


def test_encoder_reuse_trains_only_the_new_decoder(tmp_path):
    # Lite1 (240x240 input) as the new server backbone; Lite2's 260x260 is not a multiple of the
    # split stride 8, which the blueprints refuse.
    lite0 = Architecture("tf_efficientnet_lite0").build("fs-lite0-src", teacher_weights=None)
    save_codec(lite0, tmp_path / "lite0.safetensors")
    src = load_file(tmp_path / "lite0.safetensors")
    cfg = load_config(None, [
        *TINY, "architecture.teacher=tf_efficientnet_lite1", "model_id=fs-lite1-reuse",
        f"init_codec={tmp_path / 'lite0.safetensors'}", "freeze=[g_a, entropy]",
    ])
    train(cfg, tmp_path / "run", progress=False)
    out = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    frozen = [k for k in src if k.split(".")[0] in ("g_a", "entropy")]
    assert frozen and all(torch.equal(out[k], src[k]) for k in frozen)
    start = Architecture("tf_efficientnet_lite1").build("fs-lite1-reuse", teacher_weights=None)
    g_s = {k: v for k, v in start.state_dict().items() if k.startswith("g_s.")}
    assert any(not torch.equal(out[k], v) for k, v in g_s.items() if v.is_floating_point())


def test_reuse_warm_start_and_the_edge_input_size_reach_the_trained_file(tmp_path):
    # Lite2 with the lite0 encoder's 224 px input (its own 260 px is refused by the blueprints)
    # and init_g_s: g_s tensors whose shape fits start from lite0's decoder, the 48-channel
    # output layer (lite0: 40) keeps its seeded init. The file records the input size, so eval
    # and serving preprocess as the edge does.
    from frankensplit.models.zoo import load_model_file

    lite0 = Architecture("tf_efficientnet_lite0").build("fs-lite0-src", teacher_weights=None)
    save_codec(lite0, tmp_path / "lite0.safetensors")
    src = load_file(tmp_path / "lite0.safetensors")
    cfg = load_config(None, [
        *TINY, "architecture.teacher=tf_efficientnet_lite2", "model_id=fs-test.lite2",
        "stages.0.lr=1.0e-30", f"init_codec={tmp_path / 'lite0.safetensors'}",
        "freeze=[g_a, entropy]", "init_g_s=true", "architecture.input_size=224",
        "architecture.crop_pct=0.875", "architecture.reuses=fs-lite0-src",
    ])
    train(cfg, tmp_path / "run", progress=False)
    out = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    seeded = Architecture("tf_efficientnet_lite2").build("fs-test.lite2", teacher_weights=None).g_s
    fresh = {"g_s." + k: v for k, v in seeded.state_dict().items()}
    moving = [k for k in fresh if "running_" in k or "num_batches" in k]  # BN stats, train mode
    fits = [k for k in fresh if k in src and src[k].shape == fresh[k].shape and k not in moving]
    refit = [k for k in fresh if (k not in src or src[k].shape != fresh[k].shape)
             and k not in moving]
    assert fits and refit
    assert all(torch.allclose(out[k], src[k], atol=1e-12) for k in fits)
    assert all(torch.allclose(out[k], fresh[k], atol=1e-12) for k in refit)
    model = load_model_file(tmp_path / "run/lmbda-2/best.safetensors", teacher_weights=None)
    assert model.data_config["input_size"] == (3, 224, 224)
    assert model.data_config["crop_pct"] == 0.875
    assert model.encoder_id == "fs-lite0-src"  # its packets name the source encoder
    with pytest.raises(ValueError, match="reuses needs the source"):
        load_config(None, [*TINY, "architecture.reuses=fs-lite0-src"]).validate()
    with pytest.raises(ValueError, match="input_size and crop_pct go together"):
        load_config(None, [*TINY, "architecture.input_size=224"]).validate()
    with pytest.raises(ValueError, match="init_g_s needs init_codec"):
        load_config(None, [*TINY, "init_g_s=true"]).validate()


def test_init_g_s_file_refits_a_reuse_decoder_on_a_retrained_source(tmp_path):
    # The source encoder was retrained: g_a and the entropy model come from the new source
    # (init_codec), g_s from the decoder trained on the old one (init_g_s: a file), not from the
    # new source's lite0 decoder nor a fresh seed.
    new_src = Architecture("tf_efficientnet_lite0").build("fs-lite0-src", teacher_weights=None)
    save_codec(new_src, tmp_path / "src.safetensors")
    old = Architecture("tf_efficientnet_lite1").build("fs-lite0-src.lite1", teacher_weights=None)
    with torch.no_grad():
        for p in old.g_s.parameters():
            p.add_(0.5)  # unlike any seeded init
    save_codec(old, tmp_path / "old.safetensors")
    src, dec = load_file(tmp_path / "src.safetensors"), load_file(tmp_path / "old.safetensors")
    cfg_args = [
        *TINY, "architecture.teacher=tf_efficientnet_lite1", "model_id=fs-lite0-src.lite1",
        "stages.0.lr=1.0e-30", f"init_codec={tmp_path / 'src.safetensors'}",
        "freeze=[g_a, entropy]", "architecture.input_size=224", "architecture.crop_pct=0.875",
        "architecture.reuses=fs-lite0-src",
    ]
    cfg = load_config(None, [*cfg_args, f"init_g_s={tmp_path / 'old.safetensors'}"])
    assert cfg.init_g_s == str(tmp_path / "old.safetensors")
    train(cfg, tmp_path / "run", progress=False)
    out = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    frozen = [k for k in src if k.split(".")[0] in ("g_a", "entropy")]
    assert frozen and all(torch.equal(out[k], src[k]) for k in frozen)
    weights = [k for k in dec if k.startswith("g_s.") and "running_" not in k
               and "num_batches" not in k]  # BN statistics move in train mode
    assert weights and all(torch.allclose(out[k], dec[k], atol=1e-12) for k in weights)
    for bad in ("''", "'false'"):  # a quoted boolean is not a file name
        with pytest.raises(ValueError, match="a codec file"):
            load_config(None, [*TINY, f"init_g_s={bad}"]).validate()
    with pytest.raises(ValueError, match="expected git:<commit>:<path>"):
        load_config(None, [*TINY, "init_g_s=git:HEAD"]).validate()
    # another backbone's decoder is refused, not half-loaded where shapes happen to fit
    other = Architecture("tf_efficientnet_lite2").build("fs-lite0-src.lite2", teacher_weights=None)
    save_codec(other, tmp_path / "lite2.safetensors")
    wrong = load_config(None, [*cfg_args, f"init_g_s={tmp_path / 'lite2.safetensors'}"])
    with pytest.raises(ValueError, match="a decoder for tf_efficientnet_lite2"):
        train(wrong, tmp_path / "run2", progress=False)
    missing = load_config(None, [*cfg_args, f"init_g_s={tmp_path / 'none.safetensors'}"])
    with pytest.raises(ValueError, match="init_g_s codec not found"):
        train(missing, tmp_path / "run3", progress=False)


def test_fine_tuning_the_same_teacher_starts_from_every_part_of_the_init_codec(tmp_path):
    # Another lambda for the same teacher: g_s fits, so it is loaded too (the lite1 reuse test
    # above shows a different teacher gets a fresh g_s instead).
    src_model = Architecture("tf_efficientnet_lite0").build("fs-lite0-src", teacher_weights=None)
    save_codec(src_model, tmp_path / "src.safetensors")
    assert codec_metadata(tmp_path / "src.safetensors")["teacher"] == "tf_efficientnet_lite0"
    src = load_file(tmp_path / "src.safetensors")
    cfg = load_config(None, [*TINY, f"init_codec={tmp_path / 'src.safetensors'}",
                             "stages.0.lr=1.0e-30",  # a step that cannot move the weights
                             "aux_lr=10"])  # but moves the quantiles: CDF tables of another size
    train(cfg, tmp_path / "run", progress=False)
    out = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    g_s = [k for k in src if k.startswith("g_s.") and "running_" not in k
         and "num_batches" not in k]  # BN statistics move in train mode
    assert g_s and all(torch.allclose(out[k], src[k], atol=1e-12) for k in g_s)
    cdf = "entropy.entropy_bottleneck._quantized_cdf"
    assert out[cdf].shape != src[cdf].shape
    train(cfg, tmp_path / "run", resume=True, progress=False)  # the checkpoint's tables, not src's
    again = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    assert all(torch.equal(again[k], out[k]) for k in out)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                   check=True, capture_output=True)


def test_init_codec_from_git_history_reads_the_committed_weights(tmp_path, monkeypatch):
    """``git:<commit>:<path>`` starts from the file as committed, not from what is on disk now
    (the zoo replaces a parent's weights when it ships the child)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    arch = Architecture("tf_efficientnet_lite0")
    torch.manual_seed(1)
    save_codec(arch.build("fs-lite0-old", teacher_weights=None), repo / "fs.safetensors")
    _git(repo, "init", "-q")
    _git(repo, "add", "fs.safetensors")
    _git(repo, "commit", "-q", "-m", "parent")
    committed = load_file(repo / "fs.safetensors")
    torch.manual_seed(2)
    save_codec(arch.build("fs-lite0-new", teacher_weights=None), repo / "fs.safetensors")
    monkeypatch.chdir(repo)
    cfg = load_config(None, [*TINY, "init_codec=git:HEAD:fs.safetensors", "stages.0.lr=1.0e-30"])
    train(cfg, tmp_path / "run", progress=False)
    out = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    g_a = [k for k in committed if k.startswith("g_a.")]
    assert g_a and all(torch.allclose(out[k], committed[k], atol=1e-12) for k in g_a)
    (repo / "sub").mkdir()
    (repo / "sub/x").write_text("x")
    _git(repo, "add", "sub/x")
    _git(repo, "commit", "-q", "-m", "a folder")
    for bad, match in (("git:HEAD:none.safetensors", "no such file"),
                       ("git:HEAD:sub", "no such file"),  # a tree, not a file
                       ("git:--help:fs.safetensors", "not a commit"),
                       ("git:HEAD", "expected git:<commit>:<path>")):
        with pytest.raises(ValueError, match=match):
            train(load_config(None, [*TINY, f"init_codec={bad}"]), tmp_path / "bad",
                  progress=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    with pytest.raises(ValueError, match="inside the clone"):
        train(cfg, tmp_path / "bad", progress=False)


def test_saliency_stage_needs_a_cache(tmp_path):
    cfg = load_config(None, [*TINY, "stages.0.view=fixed", "stages.0.saliency=true",
                             f"saliency_cache={tmp_path / 'none'}"])
    with pytest.raises(ValueError, match="no saliency cache"):
        train(cfg, tmp_path / "run", progress=False)


def test_mixed_precision_keeps_the_entropy_model_in_float32():
    model = Architecture("tf_efficientnet_lite0").build("fs-amp", teacher_weights=None).train()
    forward = MixedPrecisionForward(model, "cpu", torch.bfloat16)
    out = forward(torch.randn(2, 3, 32, 32))
    assert out["y_hat"].dtype == torch.float32 and out["likelihoods"]["y"].dtype == torch.float32
    assert out["h_hat"].dtype == torch.float32  # decoded in bfloat16, returned for the loss


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bfloat16")
def test_cpu_autocast_trains_what_float32_trains(tmp_path):
    """amp on CPU (bfloat16 g_a, g_s, teacher and distillation tail) takes the same first steps as
    float32 up to bfloat16's precision: same rate, same loss to a few percent, other weights."""
    runs = {}
    for amp in (False, True):
        cfg = load_config(None, [*TINY, f"amp={str(amp).lower()}", "kd_weight=1"])
        (summary,) = train(cfg, tmp_path / str(amp), progress=False)
        runs[amp] = summary["history"][0]
    assert runs[True]["bpp_train"] == pytest.approx(runs[False]["bpp_train"], rel=0.05)
    assert runs[True]["loss"] == pytest.approx(runs[False]["loss"], rel=0.05)
    kd = [runs[amp]["kd_nats_per_image"] for amp in (True, False)]
    assert kd[0] == pytest.approx(kd[1], rel=0.1)
    amp_end, fp32_end = codec(tmp_path / "True/lmbda-2"), codec(tmp_path / "False/lmbda-2")
    assert any(not torch.equal(amp_end[k], fp32_end[k]) for k in amp_end)  # autocast did run


def test_cpu_autocast_is_refused_without_native_bfloat16(tmp_path, monkeypatch):
    monkeypatch.setattr("frankensplit.train.start.cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        train(load_config(None, [*TINY, "amp=true"]), tmp_path, progress=False)


def test_cli_trains_with_overrides_and_prints_one_line_per_lambda(tmp_path, capsys):
    from frankensplit.cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text("architecture:\n  teacher: tf_efficientnet_lite0\nlmbda: [2, 4]\n"
                      "stages:\n  - name: distill\n")
    sets = [a for s in [*TINY, "stages.0.steps_per_epoch=1"] if not s.startswith("lmbda=")
            for a in ("--set", s)]
    code = main(["train", "--config", str(config), *sets, "--out", str(tmp_path / "run"),
                 "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("fs-test-l2: best") and "lmbda-2/best.safetensors" in lines[0]
    assert (tmp_path / "run/lmbda-4/best.safetensors").is_file()
    assert main(["train", "--config", str(config), "--set", "seed=x"]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_run(tmp_path: Path) -> tuple[list[dict], Path, list[str]]:
    """``frankensplit train`` on two CPU ranks (gloo) through ``tests/ddp_worker.py``: the ranks'
    records, and the config file and overrides that a single process can train from again."""
    config = tmp_path / "ddp.yaml"
    config.write_text("architecture:\n  teacher: tf_efficientnet_lite0\n")
    # 2 epochs with validation: rank 0 rebuilds the CDF tables when it saves best.safetensors,
    # and the next epoch's buffer broadcast must still agree across ranks. 2 steps per epoch.
    overrides = [*TINY, f"data.val={TINY16}", "data.val_limit=1", "stages.0.batch_size=1",
                 "stages.0.steps_per_epoch=2", "stages.0.epochs=2"]
    sets = [a for s in overrides for a in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(REPO / "tests/ddp_worker.py"), str(tmp_path / "ranks"),
           "train", "--config", str(config), *sets, "--out", str(tmp_path / "run"), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run/lmbda-2"
    assert all((run / n).is_file() for n in ("last.pt", "best.safetensors", "summary.json"))
    assert done.stdout.count("fs-test-l2: best") == 1  # printed by rank 0 only
    ranks = [torch.load(tmp_path / f"ranks/rank{r}.pt", weights_only=True) for r in (0, 1)]
    return ranks, config, overrides


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def test_ddp_two_processes_on_cpu(tmp_path):
    """Two CPU ranks train on different batches, apply the same gradient at every optimizer step
    (the codec's and the aux step's) and end with the same weights: DDP really averages."""
    ranks, _, _ = ddp_run(tmp_path)
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == 4
    for k, (a, b) in enumerate(zip(ranks[0]["steps"], ranks[1]["steps"], strict=True)):
        assert not torch.equal(a["batch"]["x"], b["batch"]["x"]), f"step {k}: the same batch"
    assert len(ranks[0]["grads"]) == len(ranks[1]["grads"]) == 8  # 4 x (codec, aux)
    for k, (g0, g1) in enumerate(zip(ranks[0]["grads"], ranks[1]["grads"], strict=True)):
        assert all(_same(a, b) for a, b in zip(g0, g1, strict=True)), f"optimizer step {k}"
    assert ranks[0]["parameters"].keys() == ranks[1]["parameters"].keys()
    for name, p in ranks[0]["parameters"].items():
        assert torch.equal(p, ranks[1]["parameters"][name]), name

"""Options of the training recipe beyond the paper: output distillation, per-channel distortion
weights, the cosine schedule and channels_last g_s; each checked for what it must do to the loss,
the learning rate or the saved weights, on tiny configs with the real Lite0 teacher."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from frankensplit.config import StageConfig, load_config
from frankensplit.losses import channel_weights, head_distortion, output_distillation
from frankensplit.models.zoo import load_model_file
from frankensplit.threads import torch_threads
from frankensplit.train import train
from frankensplit.train.distributed import DistInfo
from frankensplit.train.loop import _scheduler, _start, _step
from frankensplit.train.objectives import (
    OBJECTIVES,
    Batch,
    HeadDistillation,
    ImageCodecObjective,
    TailDistillation,
    create_objective,
)
from tests.test_train import TINY, TINY16  # the same two-step tiny run as the loop tests


def test_output_distillation_is_the_summed_kl_and_zero_only_at_the_teacher():
    torch.manual_seed(0)
    t, s = torch.randn(3, 10), torch.randn(3, 10)
    p = F.softmax(t, 1)
    manual = (p * (F.log_softmax(t, 1) - F.log_softmax(s, 1))).sum()
    assert torch.allclose(output_distillation(s, t), manual, atol=1e-6)
    assert float(output_distillation(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(output_distillation(s, t)) > 0.01
    with pytest.raises(ValueError, match="logits"):
        output_distillation(s, t[:2])


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_channel_weights_equalise_channel_variances_at_mean_one(layout):
    torch.manual_seed(0)
    scale = torch.tensor([1.0, 10.0, 100.0])
    h = torch.randn(64, 3, 8, 8) * scale.view(1, 3, 1, 1)
    if layout == "NHWC":
        h = h.permute(0, 2, 3, 1)
    c = channel_weights(h, layout)
    assert c.shape == (3,) and float(c.mean()) == pytest.approx(1.0, rel=1e-5)
    # weighted squared error per channel: each channel's error relative to its own variance
    ratio = c * scale.pow(2)
    assert torch.allclose(ratio / ratio[0], torch.ones(3), rtol=0.15)
    with pytest.raises(ValueError, match="4-D"):
        channel_weights(h[0], layout)


def test_channel_weighted_distortion_is_the_weighted_sum():
    torch.manual_seed(0)
    h, h_hat = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    c = torch.tensor([0.5, 1.0, 2.0])
    manual = ((h_hat - h).pow(2) * c.view(1, 3, 1, 1)).sum()
    assert torch.allclose(head_distortion(h_hat, h, c=c), manual)
    nhwc = head_distortion(h_hat.permute(0, 2, 3, 1), h.permute(0, 2, 3, 1), layout="NHWC", c=c)
    assert torch.allclose(nhwc, manual)
    with pytest.raises(ValueError, match="channel weights"):
        head_distortion(h_hat, h, c=torch.ones(4))


def test_config_checks_the_new_options():
    with pytest.raises(ValueError, match="cosine needs steps_per_epoch"):
        load_config(None, ["stages.0.schedule=cosine"])
    with pytest.raises(ValueError, match="schedule"):
        load_config(None, ["stages.0.schedule=linear"])
    with pytest.raises(ValueError, match="kd_weight"):
        load_config(None, ["kd_weight=-1"])
    with pytest.raises(ValueError, match="head"):
        create_objective(load_config(None, ["objective=image", "kd_weight=1"]))


def test_cosine_schedule_warms_up_peaks_and_decays_to_zero():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-3)
    stage = StageConfig(epochs=2, steps_per_epoch=50, lr=2e-3, schedule="cosine", warmup_steps=10)
    sched = _scheduler(opt, stage)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-3 / 11)
    assert max(lrs) == pytest.approx(2e-3) and lrs.index(max(lrs)) == 10
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # monotone decay
    assert lrs[-1] < 2e-3 * 0.01
    assert lrs[55] == pytest.approx(2e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))


@pytest.fixture()
def one_thread():
    if not TINY16.is_dir():
        pytest.skip(f"fixture images not found in {TINY16}")
    with torch_threads(1):
        yield


def test_kd_term_is_added_to_the_loss_with_its_feature_size_scale(tmp_path, one_thread):
    cfg = load_config(None, [*TINY, "kd_weight=3", "channel_norm=true"])
    run = _start(cfg, 2.0, tmp_path, False, DistInfo())
    assert run.c is not None and run.c.shape == (run.model.teacher.spec.channels,)
    assert float(run.c.mean()) == pytest.approx(1.0, rel=1e-4) and float(run.c.std()) > 0.1
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    parts = _step(run, Batch(x))
    h = run.model.teacher.head(x)
    expected = parts["distortion"] + 2.0 * parts["bits"] + 3.0 * h[0].numel() * parts["kd"]
    assert torch.allclose(parts["loss"], expected, rtol=1e-5)
    assert float(parts["kd"].detach()) > 0
    # the KD term reaches g_a through g_s and the frozen tail; the teacher takes no gradient
    parts["kd"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in run.model.g_a.parameters())
    assert all(p.grad is None for p in run.model.teacher.parameters())


def test_training_with_every_option_saves_contiguous_loadable_weights(tmp_path, one_thread):
    cfg = load_config(None, [*TINY, "kd_weight=1", "channel_norm=true", "channels_last=true",
                             "stages.0.schedule=cosine", "stages.0.warmup_steps=1"])
    (summary,) = train(cfg, tmp_path, progress=False)
    (record,) = summary["history"]
    assert record["kd_nats_per_image"] > 0
    model = load_model_file(tmp_path / "lmbda-2" / "last.safetensors", teacher_weights="offline")
    assert all(p.is_contiguous() for p in model.g_s.parameters())


def test_channels_last_g_s_computes_the_same_loss(tmp_path, one_thread):
    runs = []
    for v in ("true", "false"):
        torch.manual_seed(0)  # the same random codec in both
        runs.append(_start(load_config(None, [*TINY, f"channels_last={v}"]), 2.0, tmp_path,
                           False, DistInfo()))
    assert runs[0].model.g_s.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert runs[1].model.g_s.body[0].weight.is_contiguous()
    x = torch.randn(2, 3, 64, 64)
    losses = []
    for run in runs:
        run.model.eval()  # rounding, not noise: the same y_hat in both
        losses.append(_step(run, Batch(x))["loss"])
    assert torch.allclose(losses[0], losses[1], rtol=1e-4)


#: Entropic Student on lite0 (stride-4 split) with the paper's decoder widths
#: (configs/es_lite0_fair.yaml builds it with the wider one, entropic_student_wide).
ES = ["architecture.encoder=entropic_student", "architecture.decoder=entropic_student",
      "architecture.split_reduction=4", "architecture.latent_channels=24",
      "model_id=es-test-l{lmbda}"]
#: Entropic Student's second stage: a model with its own tail, trained by the "tail" objective.
TAIL = ["objective=tail", "architecture.tail=trained"]


def test_the_objective_is_the_registered_class_its_name_picks_and_checks_its_options():
    """Each objective is one class in ``OBJECTIVES`` (no string tests in the loop); the model with
    its own tail is the "tail" objective's alone, whose loss is the output distillation alone."""
    assert {n: OBJECTIVES.get(n) for n in OBJECTIVES} == {
        "head": HeadDistillation, "image": ImageCodecObjective, "tail": TailDistillation}
    head = create_objective(load_config(None))
    assert isinstance(head, HeadDistillation) and not head.distills_outputs
    assert create_objective(load_config(None, ["kd_weight=3"])).distills_outputs
    tail = create_objective(load_config(None, [*ES, *TAIL, "freeze=[g_a, entropy]"]))
    assert isinstance(tail, TailDistillation) and tail.distills_outputs
    with pytest.raises(ValueError, match="trained by objective 'tail'"):
        create_objective(load_config(None, ["architecture.tail=trained"]))
    with pytest.raises(ValueError, match="own tail: architecture.tail: trained"):
        create_objective(load_config(None, ["objective=tail", "freeze=[g_a, entropy]"]))
    with pytest.raises(ValueError, match="distillation alone"):
        create_objective(load_config(None, [*TAIL, "freeze=[g_a, entropy]", "kd_weight=1"]))
    with pytest.raises(ValueError, match="needs g_a and entropy frozen"):
        create_objective(load_config(None, [*TAIL, "freeze=[g_a, g_s]"]))


def test_entropic_student_second_stage_trains_decoder_and_own_tail_only(tmp_path):
    from safetensors.torch import load_file

    from frankensplit.models.architecture import Architecture
    from frankensplit.models.codec_file import save_codec

    stage1 = Architecture("tf_efficientnet_lite0", method="entropic_student",
                          encoder="entropic_student", latent_channels=24,
                          decoder="entropic_student", split_reduction=4).build(
        "es-test-l2", teacher_weights="offline")
    save_codec(stage1, tmp_path / "stage1.safetensors")
    with pytest.raises(ValueError, match="needs g_a and entropy frozen"):
        create_objective(load_config(None, [*TINY, *ES, *TAIL]))
    cfg = load_config(None, [*TINY, *ES, *TAIL, "freeze=[g_a, entropy]",
                             f"init_codec={tmp_path / 'stage1.safetensors'}"])
    train(cfg, tmp_path / "run", progress=False)
    src = load_file(tmp_path / "stage1.safetensors")
    out = load_file(tmp_path / "run/lmbda-2/last.safetensors")
    frozen = [k for k in src if k.split(".")[0] in ("g_a", "entropy")]
    assert frozen and all(torch.equal(out[k], src[k]) for k in frozen)
    assert any(not torch.equal(out[k], src[k]) for k in src if k.startswith("g_s."))
    teacher_tail = {"tail." + k: v for k, v in stage1.teacher.tail.state_dict().items()}
    tail = [k for k in out if k.startswith("tail.")]
    assert sorted(tail) == sorted(teacher_tail)  # the whole tail is stored, nothing else
    assert any(not torch.equal(out[k], teacher_tail[k]) for k in tail
               if out[k].is_floating_point() and "running_" not in k)
    # BN statistics stay the teacher's: the tail is fine-tuned in eval mode
    assert all(torch.equal(out[k], teacher_tail[k]) for k in tail if "running_" in k)
    model = load_model_file(tmp_path / "run/lmbda-2/last.safetensors", teacher_weights="offline")
    assert model.tail is not None and model.architecture.tail == "trained"
    # the teacher itself is untouched, and the server half decodes through the model's own tail
    assert all(torch.equal(v, stage1.teacher.tail.state_dict()[k])
               for k, v in model.teacher.tail.state_dict().items())
    x = torch.randn(1, 3, 64, 64)
    packet = model.edge.encode(x)[0]
    y_hat = model.server.decode_latent([packet])
    with torch.no_grad():
        assert torch.allclose(model.server.decode([packet]), model.classify(model.g_s(y_hat)))
        assert not torch.allclose(model.classify(model.g_s(y_hat)),
                                  model.teacher.tail(model.g_s(y_hat)))


def test_a_frozen_module_of_the_own_tail_stays_the_teachers_and_is_left_out_when_shipped(
        tmp_path, one_thread):
    """``freeze: [g_a, entropy, tail.8]`` (configs/es_lite0_fair_stage2.yaml): lite0's classifier
    Linear is bit for bit the teacher's after training while the rest of the tail moves, and a
    file saved for shipping leaves it to the teacher; a path the tail lacks is refused."""
    import json

    from frankensplit.models.codec_file import codec_metadata, save_codec

    with pytest.raises(ValueError, match=r"has no module 'tail.9' .* modules: tail.0, .*tail.8$"):
        _start(load_config(None, [*TINY, *ES, *TAIL, "freeze=[g_a, entropy, tail.9]"]), 2.0,
               tmp_path, False, DistInfo())
    cfg = load_config(None, [*TINY, *ES, *TAIL, "freeze=[g_a, entropy, tail.8]"])
    train(cfg, tmp_path / "run", progress=False)
    model = load_model_file(tmp_path / "run/lmbda-2/last.safetensors", teacher_weights="offline")
    teacher = model.teacher.tail.state_dict()
    assert type(model.tail[8]) is torch.nn.Linear
    for name, tensor in model.tail.state_dict().items():
        if name.startswith("8."):
            assert torch.equal(tensor, teacher[name]), name
    assert not torch.equal(model.tail[5].weight, model.teacher.tail[5].weight)  # conv_head moved
    save_codec(model, tmp_path / "shipped.safetensors", tail_dtype="float16",
               omit_teacher_tail=True, update_tables=False)
    listed = json.loads(codec_metadata(tmp_path / "shipped.safetensors")["tail_from_teacher"])
    assert {"8.weight", "8.bias"} <= set(listed) and "5.weight" not in listed

"""Training configs: strict keys and types, ``--set`` overrides, sweeps, and every shipped recipe."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from frankensplit import bitstream
from frankensplit.config import (
    DEFAULT_ARCHITECTURE,
    StageConfig,
    TrainConfig,
    load_config,
    to_dict,
)
from frankensplit.models.architecture import Architecture
from frankensplit.train import format_lmbda
from frankensplit.train.objectives import create_objective

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_load_without_a_file():
    cfg = load_config(None)
    assert isinstance(cfg, TrainConfig)
    assert cfg.lmbda == [1.0] and cfg.stages == [StageConfig()]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    create_objective(cfg)  # its objective takes its options
    assert cfg.stages and cfg.lmbda
    assert to_dict(cfg)["architecture"]["teacher"] == cfg.architecture.teacher
    for lmbda in cfg.lmbda:  # every model id it would produce is valid on the wire
        bitstream.Packet(cfg.model_id.format(lmbda=format_lmbda(lmbda)), (1, 1, 1), b"")


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['lamda'\].*allowed"):
        load_config(write(tmp_path, "lamda: 0.5\n"))
    with pytest.raises(ValueError, match=r"config.stages\[0\]: unknown keys \['epoch'\]"):
        load_config(write(tmp_path, "stages:\n  - epoch: 3\n"))
    with pytest.raises(ValueError, match=r"config.data: unknown keys \['trian'\]"):
        load_config(None, ["data.trian=[a]"])


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("seed: 1.5\n", "config.seed"),
        ("amp: 'yes'\n", "config.amp"),
        ("lmbda: [0.5, 'x']\n", r"config.lmbda\[1\]"),
        ("stages:\n  - epochs: true\n", r"config.stages\[0\].epochs"),
        ("data: [a]\n", "config.data"),
        ("data:\n  val_limit: 'ten'\n", "config.data.val_limit"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_key(tmp_path, text, where):
    with pytest.raises(TypeError, match=where):
        load_config(write(tmp_path, text))


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ValueError, match="config not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_config(write(tmp_path, "lmbda: [1,\n"))
    with pytest.raises(TypeError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- 1\n"))
    with pytest.raises(ValueError, match="lmbda must be"):
        load_config(None, ["lmbda=[1, -2]"])
    with pytest.raises(ValueError, match="saliency needs view 'fixed'"):
        load_config(None, ["stages.0.saliency=true"])
    with pytest.raises(ValueError, match="freeze: unknown parts"):
        load_config(None, ["freeze=[g_b]"])
    with pytest.raises(ValueError, match="nothing would train"):
        load_config(None, ["freeze=[g_a, entropy, g_s]"])
    own_tail = ["objective=tail", "architecture.tail=trained"]
    assert load_config(None, [*own_tail, "freeze=[g_a, entropy, tail.8, tail.3.0]"]).freeze == [
        "g_a", "entropy", "tail.8", "tail.3.0"]
    with pytest.raises(ValueError, match=r"unknown parts \['tail'\]; expected .* tail.<module"):
        load_config(None, [*own_tail, "freeze=[g_a, entropy, tail]"])
    with pytest.raises(ValueError, match="'tail.8.' is no module path"):
        load_config(None, [*own_tail, "freeze=[g_a, entropy, tail.8.]"])
    with pytest.raises(ValueError, match="tail.8 is a module of an own tail, which this model"):
        load_config(None, ["freeze=[g_a, tail.8]"])
    with pytest.raises(ValueError, match="must contain"):
        load_config(None, ["model_id=fixed", "lmbda=[1, 2]"])


def test_set_overrides_with_yaml_values_and_list_indices(tmp_path):
    path = write(tmp_path, "lmbda: 2.0\nstages:\n  - name: a\n  - name: b\n    view: fixed\n")
    cfg = load_config(path, [
        "seed=7", "data.train=[x, y]", "data.val=null", "stages.1.epochs=3",
        "stages.0.lr=5e-4", "amp=true",
    ])
    assert cfg.seed == 7 and cfg.amp is True and cfg.data.train == ["x", "y"]
    assert cfg.data.val is None
    assert [s.epochs for s in cfg.stages] == [5, 3] and cfg.stages[0].lr == 5e-4
    # stages.N works without a stages section: the default stage is created first
    assert load_config(None, ["stages.0.epochs=1"]).stages[0].epochs == 1


def test_set_errors_are_clear(tmp_path):
    path = write(tmp_path, "lmbda: 2.0\n")
    with pytest.raises(ValueError, match="expects key=value"):
        load_config(path, ["seed"])
    with pytest.raises(ValueError, match=r"'3' is not an index of a list of 1"):
        load_config(path, ["stages.3.epochs=1"])
    with pytest.raises(TypeError, match="not a section"):
        load_config(path, ["lmbda.x=1"])
    with pytest.raises(ValueError, match="invalid YAML value"):
        load_config(path, ["lmbda=[1,"])


def test_lists_are_sweeps_and_a_scalar_is_a_one_item_sweep(tmp_path):
    assert load_config(write(tmp_path, "lmbda: 2\n")).lmbda == [2.0]
    cfg = load_config(write(tmp_path, "lmbda: [0.015, 0.032, 1]\n"))
    assert cfg.lmbda == [0.015, 0.032, 1.0] and all(isinstance(v, float) for v in cfg.lmbda)
    assert load_config(None, ["lmbda=[0.5,4]", "lmbda.1=8"]).lmbda == [0.5, 8.0]


def test_the_architecture_section_is_the_trained_models_architecture(tmp_path):
    text = ("architecture:\n  teacher: tf_efficientnet_lite1\n  entropy: gained_factorized\n"
            "  rates: [4, 1]\nmodel_id: fs-vr\n")
    cfg = load_config(write(tmp_path, text))
    assert cfg.architecture == Architecture("tf_efficientnet_lite1", entropy="gained_factorized",
                                            rates=(4.0, 1.0))
    assert load_config(None).architecture == DEFAULT_ARCHITECTURE
    # --set without a section starts from the default architecture; with one, from the file's
    assert load_config(None, ["architecture.latent_channels=12"]).architecture == Architecture(
        "tf_efficientnet_lite0", latent_channels=12)
    assert load_config(write(tmp_path, text), ["architecture.rates=[8, 2]"]).architecture.rates \
        == (8.0, 2.0)
    with pytest.raises(TypeError, match=r"config.architecture: missing keys \['teacher'\]"):
        load_config(write(tmp_path, "architecture:\n  latent_channels: 12\n"))
    with pytest.raises(ValueError, match=r"config.architecture: unknown keys \['techer'\]"):
        load_config(None, ["architecture.techer=x"])
    with pytest.raises(ValueError, match="rates must be"):
        load_config(None, ["architecture.rates=[1, 4]", "model_id=fs-vr"])


@pytest.mark.parametrize("key", [*(f.name for f in dataclasses.fields(Architecture)), "train_tail"])
def test_keys_of_the_flat_schema_are_refused_with_their_new_place(tmp_path, key):
    """A config written before the architecture section (``teacher: ...`` at the top) is never
    read as something else: one line names where the key is now."""
    new = "objective: tail" if key == "train_tail" else f"architecture.{key}"
    with pytest.raises(ValueError, match=f"cfg.yaml: '{key}' moved to {new}"):
        load_config(write(tmp_path, f"{key}: x\n"))
    with pytest.raises(ValueError, match=f"--set {key}=x: '{key}' moved to {new}"):
        load_config(None, [f"{key}=x"])
    fix = "--set objective=tail" if key == "train_tail" else f"--set architecture.{key}=x"
    with pytest.raises(ValueError, match=fix):
        load_config(None, [f"{key}=x"])

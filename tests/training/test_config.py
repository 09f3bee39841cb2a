"""Strict config loading: unknown keys, wrong types, disallowed values and overrides give named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ldmkit.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_data,
    load_config,
    lookup,
    parse_override,
    to_dict,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["ddpm_fmnist.yaml", "iddpm_fmnist.yaml"])
def test_presets_load_and_follow_the_papers(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.diffusion.num_timesteps == 1000 and cfg.diffusion.prediction_type == "eps"
    if name.startswith("ddpm"):
        assert (cfg.diffusion.schedule, cfg.diffusion.variance_type, cfg.diffusion.loss_type) == \
            ("linear", "fixed_large", "simple")
    else:
        assert (cfg.diffusion.schedule, cfg.diffusion.variance_type, cfg.diffusion.loss_type) == \
            ("cosine", "learned_range", "hybrid")
    # the stored form round-trips
    assert config_from_data(to_dict(cfg)) == cfg


def test_unknown_key_names_path_and_valid_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "train.lrr" in msg and "did you mean 'lr'" in msg and "batch_size" in msg


def test_unknown_section():
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        config_from_data({"trian": {}})


@pytest.mark.parametrize("data, needle", [
    ({"train": {"lr": "fast"}}, "train.lr: expected float, got 'fast' (str)"),
    ({"train": {"bf16": 1}}, "train.bf16: expected bool, got 1 (int)"),
    ({"train": {"batch_size": 3.5}}, "train.batch_size: expected int, got 3.5"),
    ({"train": {"lr_schedule": "cosin"}}, "did you mean 'cosine'"),
    ({"diffusion": {"variance_type": "small"}}, "diffusion.variance_type: expected one of"),
    ({"diffusion": {"schedule": "lineer"}}, "valid: "),
    ({"unet": {"channel_mult": "1,2"}}, "unet.channel_mult: expected a list"),
    ({"unet": {"norm_groups": 7}}, "not divisible by norm_groups=7"),
    ({"train": {"batch_size": 10, "grad_accum": 3}}, "batch_size=10 must be divisible by grad_accum=3"),
    ({"train": {"keep_last": 0}}, "keep_last=0 must be positive"),
    ({"diffusion": {"loss_type": "hybrid"}}, "'hybrid' with learned/learned_range"),
    ({"unet": {"preset": "tinyy"}}, "unknown unet.preset 'tinyy'; valid:"),
    ({"train": 5}, "train: expected a mapping"),
])
def test_bad_values_are_named(data, needle):
    with pytest.raises(ConfigError) as e:
        config_from_data(data, source="x.yaml")
    assert needle in str(e.value) and str(e.value).startswith("x.yaml: ")


def test_yaml_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_are_yaml_scalars_and_checked():
    assert parse_override("--train.lr=2e-4") == (["train", "lr"], "2e-4")
    assert parse_override("--train.bf16=true") == (["train", "bf16"], True)
    assert parse_override("--unet.channel_mult=[1,2]") == (["unet", "channel_mult"], [1, 2])
    cfg = config_from_data({}, ["--train.lr=2e-4", "--train.max_steps=7", "--sample.steps=null",
                                "--unet.channel_mult=[1,2]", "--unet.attention_levels=[]"])
    assert cfg.train.lr == 2e-4 and cfg.train.max_steps == 7 and cfg.sample.steps is None
    assert cfg.unet.channel_mult == (1, 2)
    with pytest.raises(ConfigError, match="train.max_step: unknown key"):
        config_from_data({}, ["--train.max_step=3"])
    with pytest.raises(ConfigError, match="expected --section.key=value"):
        config_from_data({}, ["--train.lr"])
    with pytest.raises(ConfigError, match="not a dotted key"):
        parse_override("--train..lr=1")
    with pytest.raises(ConfigError, match="train.seed is a value, not a section"):
        apply_overrides({"train": {"seed": 1}}, ["--train.seed.x=2"])


def test_unet_preset_expands_and_explicit_keys_win():
    cfg = config_from_data({"unet": {"preset": "tiny", "dropout": 0.25}})
    assert cfg.unet.model_channels == 16 and cfg.unet.dropout == 0.25


def test_learn_variance_is_derived_not_set():
    with pytest.raises(ConfigError, match="unet.learn_variance is set by diffusion.variance_type"):
        config_from_data({"unet": {"learn_variance": True}})


def test_lookup_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown sampler 'dim'; valid: ddim, ddpm; did you mean 'ddim'\?"):
        lookup({"ddim": 1, "ddpm": 2}, "dim", "sampler")


def test_defaults_are_a_valid_config():
    assert isinstance(config_from_data(None), Config)

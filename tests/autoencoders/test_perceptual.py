import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from ldmkit.autoencoders.perceptual import (
    VGG16_TAPS,
    FeatureNetwork,
    PerceptualLoss,
    build_lpips_vgg,
    build_perceptual,
    vgg16_body,
)
from ldmkit.weights import sha256_file as sha256_of


def _tiny_features():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU())
    return FeatureNetwork(body, (1, 3))


def test_distance_is_zero_for_identical_images_positive_otherwise_and_differentiable():
    loss = PerceptualLoss(_tiny_features())
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(loss(x, x), torch.zeros(3))
    y = (x + 0.5 * torch.randn_like(x)).requires_grad_(True)
    d = loss(x, y)
    assert d.shape == (3,) and (d > 0).all()
    d.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.features.training  # the feature network stays frozen in eval mode


def _write_fake_lpips(path, half=False):
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16_body().state_dict().items()}
    for i, c in enumerate((64, 128, 256, 512, 512)):
        state[f"lin{i}.model.1.weight"] = torch.rand(1, c, 1, 1)
    save_file({k: (v.half() if half else v).contiguous() for k, v in state.items()}, str(path))
    return sha256_of(path)


def test_lpips_vgg_loads_only_a_verified_safetensors_file(tmp_path):
    path = tmp_path / "lpips_vgg.safetensors"
    with pytest.raises(FileNotFoundError, match="sha256sum lpips_vgg.safetensors"):
        build_lpips_vgg(path, "0" * 64)
    digest = _write_fake_lpips(path, half=True)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        build_lpips_vgg(path, "0" * 64)
    with pytest.raises(ValueError, match=digest):  # no digest given: the message shows the file's digest
        build_lpips_vgg(path, None)
    net = build_lpips_vgg(path, digest.upper())
    assert net.taps == VGG16_TAPS and len(net.layer_weights) == 5
    loss = PerceptualLoss(net)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loss(x, x), torch.zeros(2))
    assert (loss(x, -x) > 0).all()


def test_lpips_vgg_rejects_wrong_keys(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(path))
    with pytest.raises(ValueError, match="missing keys"):
        build_lpips_vgg(path, sha256_of(path))


def test_registry_errors_and_none():
    assert build_perceptual("none") is None
    with pytest.raises(ValueError, match="valid"):
        build_perceptual("alexnet")
    with pytest.raises(ValueError, match="lpips_path"):
        build_perceptual("lpips_vgg")


def test_fmnist_default_features_if_the_asset_exists():
    try:
        loss = build_perceptual("fmnist")
    except FileNotFoundError as e:
        pytest.skip(f"fmnist feature asset not built yet: {e}")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert len(loss.features(x)) == 3
    torch.testing.assert_close(loss(x, x), torch.zeros(2))
    assert (loss(x, x.flip(-1)) > 0).all()

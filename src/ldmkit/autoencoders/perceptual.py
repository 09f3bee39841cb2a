"""Perceptual (LPIPS-style) distance with a pluggable, frozen feature network (Zhang et al. 2018).

d(x, y) = sum_l mean_{h,w} sum_c w_{l,c} (f^l(x) / |f^l(x)| - f^l(y) / |f^l(y)|)^2, with channel-wise unit
normalisation of each tapped feature map f^l and per-channel weights w (ones when the network has none).

Feature networks (:data:`PERCEPTUAL_NETWORKS`):

- ``fmnist`` (the offline default): the three conv blocks of ldmkit's own Fashion-MNIST classifier
  (``ldmkit.metrics.fmnist_cnn``, weights ``ldmkit/assets/fmnist_features.safetensors``), uniform weights.
- ``lpips_vgg``: the LPIPS-VGG architecture (VGG16 conv layers + learned 1x1 "lin" weights). Its weights
  cannot be downloaded here; the user supplies a safetensors file and its sha256 (see :data:`LPIPS_HOWTO`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ldmkit.registry import ConfigError, lookup
from ldmkit.weights import load_verified_safetensors

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG16_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's numbering
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_HOWTO = """\
LPIPS-VGG weights are not shipped and ldmkit never downloads or unpickles anything. To make the file, on a
machine with internet, torchvision and the `lpips` package (https://github.com/richzhang/PerceptualSimilarity):

    python - <<'PY'
    import torch, torchvision, lpips, safetensors.torch as st
    vgg = torchvision.models.vgg16(weights="IMAGENET1K_V1").features.state_dict()
    lin = torch.load(lpips.__path__[0] + "/weights/v0.1/vgg.pth", weights_only=True)
    st.save_file({**{"features." + k: v.contiguous() for k, v in vgg.items()},
                  **{k: v.contiguous() for k, v in lin.items()}}, "lpips_vgg.safetensors")
    PY
    sha256sum lpips_vgg.safetensors

Expected keys: features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias} (torchvision vgg16().features)
and lin{0..4}.model.1.weight (shape [1, C, 1, 1]). Then set loss.lpips_path to the file and
loss.lpips_sha256 to the printed digest."""


class FeatureNetwork(nn.Module):
    """Frozen network returning a list of feature maps ``[N, C_l, H_l, W_l]`` and optional channel weights."""

    def __init__(self, body: nn.Sequential, taps: tuple[int, ...], layer_weights: list[torch.Tensor] | None = None):
        super().__init__()
        self.body = body
        self.taps = taps
        self.layer_weights = nn.ParameterList(
            [nn.Parameter(w.reshape(1, -1, 1, 1), requires_grad=False) for w in layer_weights or []])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNetwork:
        return super().train(False)  # always frozen: BatchNorm keeps its running statistics

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.preprocess(x)
        feats = []
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in self.taps:
                feats.append(h)
            if i >= self.taps[-1]:
                break
        return feats


class FMNISTFeatures(FeatureNetwork):
    """Conv-block outputs (after ReLU) of ldmkit's Fashion-MNIST classifier; 32x32 inputs are centre-cropped."""

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"fmnist perceptual features need 1-channel images, got {tuple(x.shape)}")
        s = x.shape[-1]
        if s > 28:
            o = (s - 28) // 2
            x = x[..., o:o + 28, o:o + 28]
        elif s < 28:
            raise ValueError(f"fmnist perceptual features need images of at least 28x28, got {tuple(x.shape)}")
        return x


class VGGFeatures(FeatureNetwork):
    """LPIPS input scaling (shift/scale of [-1, 1] images); grey images are repeated to three channels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return (x - self.shift) / self.scale


def vgg16_body() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in VGG16_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers)


def build_lpips_vgg(path: str | Path, sha256: str | None) -> VGGFeatures:
    """LPIPS-VGG from a user-supplied safetensors file (sha256-verified; see :data:`LPIPS_HOWTO`)."""
    state, _ = load_verified_safetensors(path, sha256, "LPIPS-VGG (loss.lpips_path)", howto=LPIPS_HOWTO)
    body = vgg16_body()
    expected = {f"features.{k}" for k in body.state_dict()} | {f"lin{i}.model.1.weight" for i in range(5)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"LPIPS-VGG: {path} has missing keys {missing[:6]} / unexpected keys {unexpected[:6]}."
                         f"\n{LPIPS_HOWTO}")
    body.load_state_dict({k[len("features."):]: v.float() for k, v in state.items() if k.startswith("features.")})
    lins = [state[f"lin{i}.model.1.weight"].float().flatten() for i in range(5)]
    for i, (w, c) in enumerate(zip(lins, LPIPS_CHANNELS)):
        if w.numel() != c:
            raise ValueError(f"LPIPS-VGG: {path}: lin{i}.model.1.weight has {w.numel()} entries, expected {c}")
    return VGGFeatures(body, VGG16_TAPS, lins)


def build_fmnist_features(path: str | Path | None = None) -> FMNISTFeatures:
    """The offline default: conv blocks of ldmkit's Fashion-MNIST classifier (the metrics issue's asset,
    loaded and sha256-checked by ``ldmkit.metrics.features.load_fmnist_extractor``)."""
    from ldmkit.metrics.features import load_fmnist_extractor

    try:
        extractor = load_fmnist_extractor(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"fmnist perceptual features: {e}. Or set loss.perceptual: none "
                                "(or lpips_vgg with your own weights).") from None
    body = extractor.model.body
    taps = tuple(i for i, m in enumerate(body) if isinstance(m, nn.ReLU))
    return FMNISTFeatures(body, taps)


class PerceptualLoss(nn.Module):
    """LPIPS-style distance over a frozen :class:`FeatureNetwork`; returns ``[N]`` per-image distances."""

    def __init__(self, features: FeatureNetwork):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feats = self.features(torch.cat([x, y]))
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for i, f in enumerate(feats):
            a, b = f.chunk(2)
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = (a - b).pow(2)
            if len(self.features.layer_weights):
                d = d * self.features.layer_weights[i]
            total = total + d.sum(1).mean(dim=(1, 2))
        return total


def _no_perceptual(lpips_path: str | None, lpips_sha256: str | None) -> None:
    return None


def _fmnist_perceptual(lpips_path: str | None, lpips_sha256: str | None) -> PerceptualLoss:
    return PerceptualLoss(build_fmnist_features())


def _lpips_vgg_perceptual(lpips_path: str | None, lpips_sha256: str | None) -> PerceptualLoss:
    if not lpips_path:
        raise ConfigError(f"loss.perceptual is 'lpips_vgg' but loss.lpips_path is not set.\n{LPIPS_HOWTO}")
    return PerceptualLoss(build_lpips_vgg(lpips_path, lpips_sha256))


#: ``loss.perceptual`` -> builder(lpips_path, lpips_sha256) -> PerceptualLoss or None.
PERCEPTUAL_NETWORKS = {"none": _no_perceptual, "fmnist": _fmnist_perceptual, "lpips_vgg": _lpips_vgg_perceptual}


def build_perceptual(kind: str, lpips_path: str | None = None, lpips_sha256: str | None = None) -> PerceptualLoss | None:
    """Registry lookup: ``none`` -> None, ``fmnist`` -> classifier features, ``lpips_vgg`` -> user weights."""
    return lookup(PERCEPTUAL_NETWORKS, kind, "loss.perceptual")(lpips_path, lpips_sha256)

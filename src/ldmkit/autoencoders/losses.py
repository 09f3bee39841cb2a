"""Autoencoder training losses: L1 + perceptual + PatchGAN hinge + KL/VQ regulariser
(Esser et al. 2021, Eq. 4-7; Rombach et al. 2022, Eq. 25 and App. G).

Two plain functions, called once each per step with their own optimizer:

- :func:`generator_loss` for the autoencoder: rec + perceptual + adaptive_weight * disc_weight * L_adv + L_reg,
- :func:`discriminator_loss` for the discriminator: hinge loss on real vs. reconstructed images.

Both are zero for the adversarial part before ``LossConfig.disc_start``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ldmkit.autoencoders.config import LossConfig
from ldmkit.autoencoders.perceptual import PerceptualLoss
from ldmkit.registry import lookup


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017): returns ``[N, 1, h, w]`` real/fake logits, one per patch.

    ``num_layers`` stride-2 4x4 convolutions (channels doubling, capped at 8x), then two stride-1 4x4
    convolutions; BatchNorm after every convolution but the first and last, LeakyReLU(0.2).
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, num_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        mult = 1
        for i in range(1, num_layers + 1):
            prev, mult = mult, min(2 ** i, 8)
            stride = 2 if i < num_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x_rec))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1.0e4) -> torch.Tensor:
    """lambda = ||grad_L L_rec|| / (||grad_L L_adv|| + 1e-4) at the decoder's last layer L, clamped to
    [0, max_weight] and detached (Esser et al. 2021, Eq. 7)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1.0e-4)).clamp(0.0, max_weight).detach()


#: ``Regularization.name`` -> its weight in the loss config.
REGULARIZER_WEIGHTS = {"kl": lambda cfg: cfg.kl_weight, "codebook": lambda cfg: cfg.codebook_weight}


def regularizer(posterior, num_pixels: int, cfg: LossConfig) -> tuple[torch.Tensor, dict]:
    """The posterior's own regulariser (KL per image / (C*H*W), or codebook + commitment), weighted by ``cfg``,
    and its log entries."""
    reg = posterior.regularization(num_pixels)
    return lookup(REGULARIZER_WEIGHTS, reg.name, "first-stage regulariser")(cfg) * reg.loss, reg.logs


def disc_active(step: int, cfg: LossConfig) -> bool:
    """True from ``cfg.disc_start`` on (steps count from 0)."""
    return step >= cfg.disc_start


GAN_SETTLE_STEPS = 500  # fewer adversarial steps than this at the end of a run draw a warning


def short_gan_warning(cfg: LossConfig, step: int) -> str | None:
    """The warning for a run that ended ``step`` steps in, shortly after its adversarial term switched on
    (``cfg.disc_start``); ``None`` when the GAN is off, never started, or ran long enough.

    A GAN term just switched on pulls the decoder off its reconstructions before the discriminator is any
    good: at 30 minutes the train-ldm recipe's first stage crossed ``disc_start`` by ~150 steps on an idle
    machine and its reconstructions got much worse (docs/benchmarks.md). A time budget, not the config,
    decides how many steps a run gets, so the check runs after it.
    """
    if cfg.disc_weight <= 0 or not disc_active(step - 1, cfg):
        return None
    on = step - cfg.disc_start
    if on >= GAN_SETTLE_STEPS:
        return None
    return (f"autoencoder: the adversarial loss (loss.disc_start={cfg.disc_start}) was on for only the last {on} of "
            f"{step} steps; a GAN term just switched on makes reconstructions worse before it helps "
            "(docs/benchmarks.md). For a short budget set loss.disc_weight=0 (autoencoder.loss.* in a train-ldm "
            f"recipe); for a GAN, a disc_start at least {GAN_SETTLE_STEPS} steps before the run's end")


def generator_loss(x: torch.Tensor, recon: torch.Tensor, posterior, *,
                   last_layer: torch.Tensor, discriminator: nn.Module, perceptual: PerceptualLoss | None,
                   step: int, cfg: LossConfig) -> tuple[torch.Tensor, dict]:
    """Autoencoder loss for one batch; returns ``(scalar loss, logs)``.

    Args:
        x: ``[N, C, H, W]`` real images in [-1, 1].
        recon: their reconstructions (with graph).
        posterior: the autoencoder's posterior (``ae(x)[1]``: a ``DiagonalGaussian`` or a
            ``QuantizedPosterior``), asked for its own regulariser.
        last_layer: the decoder's last weight (adaptive weight is measured there).
        discriminator: the PatchGAN (its parameters get gradients here but are stepped only by the
            discriminator optimizer; the loop zeroes them).
        perceptual: perceptual distance or None.
        step: global step (the adversarial term is off before ``cfg.disc_start``).
        cfg: loss weights.
    """
    rec = (x - recon).abs().mean()
    logs: dict[str, torch.Tensor] = {"rec_l1": rec.detach()}
    rec_total = cfg.rec_weight * rec
    if perceptual is not None and cfg.perceptual_weight > 0:
        p = perceptual(x, recon).mean()
        rec_total = rec_total + cfg.perceptual_weight * p
        logs["perceptual"] = p.detach()
    reg_loss, reg_logs = regularizer(posterior, x[0].numel(), cfg)
    logs.update(reg_logs)
    loss = rec_total + reg_loss
    zero = torch.zeros((), device=x.device)
    g_adv, d_weight = zero, zero
    if disc_active(step, cfg) and cfg.disc_weight > 0:
        g_adv = -discriminator(recon).mean()
        if torch.is_grad_enabled() and rec_total.requires_grad:
            d_weight = adaptive_weight(rec_total, g_adv, last_layer, cfg.max_adaptive_weight)
        loss = loss + cfg.disc_weight * d_weight * g_adv
    logs.update({"g_adv": g_adv.detach(), "adaptive_weight": d_weight, "loss": loss.detach()})
    return loss, logs


def discriminator_loss(x: torch.Tensor, recon: torch.Tensor, *, discriminator: nn.Module, step: int,
                       cfg: LossConfig) -> tuple[torch.Tensor, dict]:
    """PatchGAN hinge loss on real ``x`` vs. detached reconstructions; zero (no graph) before ``disc_start``.

    Returns ``(scalar loss, logs)``; the caller steps the discriminator only when ``loss.requires_grad``.
    """
    if not disc_active(step, cfg) or cfg.disc_weight <= 0:
        zero = torch.zeros((), device=x.device)
        return zero, {"d_loss": zero, "logits_real": zero, "logits_fake": zero}
    logits_real = discriminator(x.detach())
    logits_fake = discriminator(recon.detach())
    loss = hinge_d_loss(logits_real, logits_fake)
    return loss, {"d_loss": loss.detach(), "logits_real": logits_real.detach().mean(),
                  "logits_fake": logits_fake.detach().mean()}

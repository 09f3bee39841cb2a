"""Vector quantisation (van den Oord et al. 2017, "Neural Discrete Representation Learning") and the VQ
autoencoder (Esser et al. 2021; Rombach et al. 2022, "VQ-reg").

Code name -> paper symbol: ``z`` = z_e(x) (encoder output), ``codebook`` = e_1..e_K, ``z_q`` = z_q(x),
``beta`` = commitment weight, ``decay`` = EMA gamma (van den Oord et al., Appendix A.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ldmkit.autoencoders.blocks import AutoencoderBase, Decoder, Encoder
from ldmkit.autoencoders.config import ModelConfig
from ldmkit.autoencoders.distributions import Regularization


@dataclass
class QuantizedPosterior:
    """The VQ autoencoder's posterior: a point mass at the quantised latent of ``z`` ``[N, D, H, W]``.

    The first-stage contract of :class:`~ldmkit.autoencoders.distributions.DiagonalGaussian`, degenerate:
    ``sample() == mode() == z_q``; it also carries what the VQ losses and logs need.

    Attributes:
        z_q: quantised latents with the straight-through gradient (value = codebook vectors,
            gradient w.r.t. ``z`` = identity).
        loss: scalar codebook loss + beta * commitment loss (only beta * commitment with EMA updates).
        commitment: scalar ||z - sg(z_q)||^2 (mean over elements).
        codebook_loss: scalar ||sg(z) - z_q||^2 (zero tensor with EMA updates).
        indices: ``[N, H, W]`` int64 code indices.
        perplexity: exp(entropy) of the batch's code histogram (K when all codes are used evenly).
        usage: fraction of the K codes used at least once in this batch.
        restarted: number of dead codes restarted by this call.
    """

    z_q: torch.Tensor
    loss: torch.Tensor
    commitment: torch.Tensor
    codebook_loss: torch.Tensor
    indices: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    restarted: int = 0
    deterministic = True  # no spread to sample from: latent caching stores the mode alone

    @property
    def shape(self) -> torch.Size:
        return self.z_q.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """The quantised latent (a point mass has nothing to draw; ``generator`` is unused)."""
        return self.z_q

    def mode(self) -> torch.Tensor:
        """The quantised latent ``[N, D, H, W]``."""
        return self.z_q

    def regularization(self, num_pixels: int) -> Regularization:
        """Codebook + beta * commitment loss (already a per-element mean, so ``num_pixels`` is unused)."""
        logs = {"vq_loss": self.loss.detach(), "commitment": self.commitment.detach(),
                "perplexity": self.perplexity.detach(), "codebook_usage": self.usage.detach(),
                "codes_restarted": torch.tensor(float(self.restarted))}
        return Regularization("codebook", self.loss, logs)


VQOutput = QuantizedPosterior  # the quantiser's output is the posterior


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook lookup with the straight-through estimator.

    Training-mode calls also (a) initialise the codebook from the first batch's encoder outputs,
    (b) with ``ema=True`` move each code to the EMA mean of the vectors assigned to it (Laplace-smoothed
    counts, van den Oord et al. App. A.1), and (c) with ``restart_dead=True`` replace codes whose usage EMA
    fell below ``dead_threshold`` assignments per batch with random encoder outputs of the batch.
    Evaluation-mode calls change nothing.

    Args:
        num_codes: K.
        dim: D, the code vector dimension (the latent channel count).
        beta: commitment weight.
        ema: EMA codebook updates instead of the codebook loss.
        decay: EMA decay gamma.
        restart_dead: enable dead-code restarts.
        dead_threshold: usage EMA below which a code is dead.
        usage_decay: decay of the usage EMA.
        eps: Laplace smoothing of the EMA cluster sizes.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = True, decay: float = 0.99,
                 restart_dead: bool = True, dead_threshold: float = 0.03, usage_decay: float = 0.99,
                 eps: float = 1e-5):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.restart_dead, self.dead_threshold, self.usage_decay = restart_dead, dead_threshold, usage_decay
        self.codebook = nn.Parameter(torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes),
                                     requires_grad=not ema)
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_sum", self.codebook.detach().clone())
        self.register_buffer("usage_ema", torch.ones(num_codes))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def distances(self, flat: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances ``[M, K]`` between ``flat`` ``[M, D]`` and every code."""
        return (flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ self.codebook.t()
                + self.codebook.pow(2).sum(1)[None, :])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for ``indices`` ``[N, H, W]`` as a latent ``[N, D, H, W]``."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> QuantizedPosterior:
        if z.dim() != 4 or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer(dim={self.dim}) expects [N, {self.dim}, H, W], got {tuple(z.shape)}")
        n, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach())
        indices = self.distances(flat.detach()).argmin(dim=1)
        onehot = F.one_hot(indices, self.num_codes).type(flat.dtype)
        counts = onehot.sum(0)
        restarted = 0
        if self.training:
            with torch.no_grad():
                if self.ema:
                    self._ema_update(flat.detach(), onehot, counts)
                self.usage_ema.mul_(self.usage_decay).add_(counts, alpha=1.0 - self.usage_decay)
                if self.restart_dead:
                    restarted = self._restart_dead(flat.detach())
        z_q = self.lookup(indices.view(n, h, w))
        commitment = F.mse_loss(z, z_q.detach())
        if self.ema:
            codebook_loss = torch.zeros((), device=z.device, dtype=z.dtype)
        else:
            codebook_loss = F.mse_loss(z_q, z.detach())
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return QuantizedPosterior(
            z_q=z + (z_q - z).detach(),
            loss=codebook_loss + self.beta * commitment,
            commitment=commitment,
            codebook_loss=codebook_loss,
            indices=indices.view(n, h, w),
            perplexity=perplexity,
            usage=(counts > 0).float().mean(),
            restarted=restarted,
        )

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        pick = torch.randint(0, flat.shape[0], (self.num_codes,), device=flat.device)
        self.codebook.data.copy_(flat[pick])
        self.embed_sum.copy_(flat[pick])
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot: torch.Tensor, counts: torch.Tensor) -> None:
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook.data.copy_(self.embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> int:
        dead = torch.nonzero(self.usage_ema < self.dead_threshold).flatten()
        if dead.numel() == 0:
            return 0
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        new = flat[pick]
        self.codebook.data[dead] = new
        self.embed_sum[dead] = new
        self.cluster_size[dead] = 1.0
        self.usage_ema[dead] = 1.0
        return int(dead.numel())


class VQAutoencoder(AutoencoderBase):
    """Encoder -> 1x1 conv -> vector quantiser -> 1x1 conv -> decoder.

    ``encode`` returns the degenerate :class:`QuantizedPosterior`, so a latent diffusion model diffuses the
    quantised latents; ``decode`` quantises its input first, so the diffusion model's samples are snapped to
    the codebook by the decoder (Rombach et al.'s VQ-reg models: "the quantization layer is absorbed by the
    decoder").
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        mult = tuple(cfg.channel_mult)
        self.encoder = Encoder(cfg.in_channels, cfg.channels, mult, cfg.num_res_blocks, cfg.z_channels,
                               cfg.mid_attention, cfg.dropout)
        self.decoder = Decoder(cfg.z_channels, cfg.channels, mult, cfg.num_res_blocks, cfg.in_channels,
                               cfg.mid_attention, cfg.dropout)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)
        v = cfg.vq
        self.quantizer = VectorQuantizer(v.num_codes, cfg.z_channels, v.beta, v.ema, v.decay, v.restart_dead,
                                         v.dead_threshold, v.usage_decay)

    def encode(self, x: torch.Tensor) -> QuantizedPosterior:
        """Image ``[N, C, H, W]`` -> point-mass posterior at the quantised latent ``[N, D, H/f, W/f]``.

        In training mode this also updates the codebook (see :class:`VectorQuantizer`).
        """
        return self.quantizer(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Latent ``[N, D, h, w]`` -> image; quantises first unless ``quantize=False`` (z already quantised)."""
        if quantize:
            z = self.quantizer(z).z_q
        return self.decode_latent(z)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices ``[N, h, w]`` -> image."""
        return self.decode_latent(self.quantizer.lookup(indices))

"""The one contract between model and sampler: ``denoiser(x_t, t, cond) -> Prediction``.

:class:`Denoiser` turns a network's raw output into ``(x0, eps[, var_output])`` through the prediction
type (all conversions live in :mod:`ldmkit.diffusion.parameterization`). :class:`ClassifierFreeGuidance`
wraps any denoiser and mixes its conditional and unconditional predictions (Ho & Salimans 2022), with
the optional rescale of Lin et al. 2023.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ldmkit.conditioning.class_label import null_condition
from ldmkit.diffusion.parameterization import eps_from_x0, prediction_from_output
from ldmkit.types import Cond, Prediction


class Denoiser(nn.Module):
    """Network + parameterization: ``denoiser(x_t, t, cond) -> Prediction``.

    Args:
        network: called as ``network(x_t, t, class_labels=..., context=..., context_mask=..., concat=...)``
            and returning ``[N, C (x2 with learn_variance), ...]``.
        alphas_cumprod: ``[T]`` alpha-bar of the process the network is trained on (base timesteps);
            kept in float64, not saved in the state dict (the checkpoint config rebuilds it).
        prediction_type: what the network's first ``C`` channels predict: ``"eps"``, ``"x0"`` or ``"v"``.
        learn_variance: the network's last ``C`` channels are the raw variance output.
        context_encoder: a trainable ``tau_theta`` (Rombach et al. 2022, Sec. 3.3),
            ``context_encoder(tokens [N, L], token_mask [N, L]) -> (context [N, L, D], context_mask [N, L])``;
            part of the denoiser, so it is optimized, EMA'd, synced and checkpointed with the network.
            A frozen encoder (pretrained text) is not: its context arrives ready in ``cond.context``.
    """

    def __init__(self, network: nn.Module, alphas_cumprod, prediction_type: str = "eps",
                 learn_variance: bool = False, context_encoder: nn.Module | None = None):
        super().__init__()
        self.context_encoder = context_encoder
        if prediction_type not in ("eps", "x0", "v"):
            raise ValueError(f"Denoiser: prediction_type={prediction_type!r}; valid: ['eps', 'v', 'x0']")
        self.network = network
        self.prediction_type = prediction_type
        self.learn_variance = learn_variance
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.dim() != 1 or not bool(((abar >= 0) & (abar <= 1)).all()):
            raise ValueError("Denoiser: alphas_cumprod must be a 1-D tensor with values in [0, 1]")
        self.register_buffer("alphas_cumprod", abar, persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @property
    def null_class(self) -> int | None:
        """The network's null class index (for classifier-free guidance), if it has one."""
        return getattr(self.network, "null_class", None)

    def _apply(self, fn, recurse=True):
        # Keep the alpha-bar table in float64 when the module is cast with .half()/.float()/.to(dtype).
        abar = self.alphas_cumprod
        out = super()._apply(fn, recurse)
        self.alphas_cumprod = abar.to(device=self.alphas_cumprod.device, dtype=torch.float64)
        return out

    def encode_context(self, cond: Cond | None) -> Cond | None:
        """``cond`` with ``context``/``context_mask`` computed from ``tokens``/``token_mask`` by the context
        encoder (and the tokens dropped); unchanged when it holds no tokens. ``pipelines.generate`` calls it
        once before the sampling loop, so the sampler does not re-encode the tokens at every step.

        Raises:
            ValueError: ``cond`` has tokens but the denoiser has no context encoder, or it also has context.
        """
        if cond is None or cond.tokens is None:
            return cond
        if self.context_encoder is None:
            raise ValueError("Denoiser: cond.tokens given but this denoiser has no context_encoder "
                             "(cond.context_kind is 'none' or a frozen encoder that passes cond.context)")
        if cond.context is not None:
            raise ValueError("Denoiser: cond has both tokens and context; give one of them")
        mask = cond.token_mask if cond.token_mask is not None else torch.ones_like(cond.tokens, dtype=torch.bool)
        context, context_mask = self.context_encoder(cond.tokens, mask)
        return dataclasses.replace(cond, context=context, context_mask=context_mask, tokens=None, token_mask=None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond | None = None) -> Prediction:
        """Predict ``x0`` and ``eps`` for ``x_t [N, C, ...]`` at base timesteps ``t [N]`` (int64).

        ``cond.tokens`` (if set) go through the context encoder first. Returns tensors in ``x_t``'s dtype
        whatever the network's dtype.
        """
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"Denoiser: t must be [N]=[{x_t.shape[0]}], got {tuple(t.shape)}")
        if t.dtype.is_floating_point:
            raise ValueError(f"Denoiser: t must hold integer base timesteps, got {t.dtype}")
        cond = Cond() if cond is None else self.encode_context(cond)
        out = self.network(x_t, t, class_labels=cond.class_labels, context=cond.context,
                           context_mask=cond.context_mask, concat=cond.concat).to(x_t.dtype)
        var_output = None
        if self.learn_variance:
            c = x_t.shape[1]
            if out.shape[1] != 2 * c:
                raise ValueError(f"Denoiser: learn_variance needs {2 * c} output channels, got {out.shape[1]}")
            out, var_output = out[:, :c], out[:, c:]
        elif out.shape[1] != x_t.shape[1]:
            raise ValueError(f"Denoiser: network gives {out.shape[1]} channels for {x_t.shape[1]}-channel "
                             "x_t (learn_variance=False)")
        alpha_bar = self.alphas_cumprod.to(x_t.device)[t]  # [N] float64
        x0, eps = prediction_from_output(out, x_t, alpha_bar, self.prediction_type)
        return Prediction(x0=x0.to(x_t.dtype), eps=eps.to(x_t.dtype), var_output=var_output)


class ClassifierFreeGuidance(nn.Module):
    """Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper.

    ``eps = eps_u + s (eps_c - eps_u)`` with ``s = guidance_scale`` (1 = purely conditional, 0 = purely
    unconditional); ``x0`` is mixed with the same weights, which keeps the pair consistent since both are
    affine in the network output at the same ``x_t``. With ``guidance_rescale = phi > 0`` the guided ``x0``
    is rescaled to the per-example standard deviation of the conditional ``x0`` and blended,
    ``x0 = phi * x0_cfg * std(x0_c) / std(x0_cfg) + (1 - phi) * x0_cfg`` (Lin et al. 2023, Eq. 15-16),
    and ``eps`` is recomputed from it. The conditional and unconditional passes run as one batch of 2N.
    The variance output, if any, is the conditional one.

    Args:
        denoiser: the wrapped denoiser (needs ``alphas_cumprod`` when ``guidance_rescale > 0``).
        guidance_scale: ``s`` above.
        guidance_rescale: ``phi`` in [0, 1].
        null_class: the null class index; default ``denoiser.null_class``.
    """

    def __init__(self, denoiser: nn.Module, guidance_scale: float, guidance_rescale: float = 0.0,
                 null_class: int | None = None):
        super().__init__()
        if not 0.0 <= guidance_rescale <= 1.0:
            raise ValueError(f"ClassifierFreeGuidance: guidance_rescale={guidance_rescale} must be in [0, 1]")
        self.denoiser = denoiser
        self.guidance_scale = float(guidance_scale)
        self.guidance_rescale = float(guidance_rescale)
        self.null_class = getattr(denoiser, "null_class", None) if null_class is None else null_class

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond | None = None) -> Prediction:
        guided = cond is not None and any(v is not None for v in (cond.class_labels, cond.context, cond.tokens))
        if not guided or self.guidance_scale == 1.0:
            return self.denoiser(x_t, t, cond)  # nothing to guide on, or purely conditional
        n = x_t.shape[0]
        if t.dim() == 0:
            t = t.expand(n)
        both = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]),
                             Cond.cat([cond, null_condition(cond, self.null_class)]))
        s = self.guidance_scale
        x0 = torch.lerp(both.x0[n:], both.x0[:n], s) if s != 1.0 else both.x0[:n]
        eps = torch.lerp(both.eps[n:], both.eps[:n], s) if s != 1.0 else both.eps[:n]
        var_output = None if both.var_output is None else both.var_output[:n]
        if self.guidance_rescale > 0.0:
            dims = list(range(1, x_t.dim()))
            ratio = both.x0[:n].std(dim=dims, keepdim=True) / x0.std(dim=dims, keepdim=True).clamp_min(1e-12)
            x0 = torch.lerp(x0, x0 * ratio, self.guidance_rescale)
            eps = eps_from_x0(x_t, x0, self.denoiser.alphas_cumprod.to(x_t.device)[t])
        return Prediction(x0=x0, eps=eps, var_output=var_output)

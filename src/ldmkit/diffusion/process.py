"""Gaussian diffusion process of Ho et al. 2020 (DDPM) with the Nichol & Dhariwal 2021 (Improved DDPM) variances.

Index convention (the one improved-diffusion uses): a timestep ``t`` is an integer in ``[0, T-1]`` and
indexes every table; index ``t`` is the paper's step ``t + 1``. So ``alphas_cumprod[t]`` is the paper's
alpha-bar_{t+1}, ``q_sample(x0, t)`` draws x_{t+1} in paper terms, and at ``t = 0`` the reverse step
p(x_{t-1} | x_t) is the decoder p(x_0 | x_1) onto the data. In this module's docstrings ``x_{t-1}``
means the state one step cleaner than ``x_t``; for ``t = 0`` it is the data ``x0`` itself.

Code name -> paper symbol: ``betas`` beta_t, ``alphas`` alpha_t = 1 - beta_t, ``alphas_cumprod``
alpha-bar_t, ``alphas_cumprod_prev`` alpha-bar_{t-1} (1 at t = 0), ``posterior_variance`` beta-tilde_t
(Ho Eq. 7), ``posterior_mean_coef1/2`` the coefficients of x0 and x_t in mu-tilde_t (Ho Eq. 7).

Coefficient tables are float64 torch tensors on the CPU, computed once; every method gathers the rows it
needs on the input's device and casts them to the input's dtype, so a float32 / bfloat16 batch on any
accelerator works without the process being moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from ldmkit.registry import lookup
from ldmkit.types import Prediction

VarianceType = Literal["fixed_small", "fixed_large", "learned", "learned_range"]
# variance type -> whether the network outputs it (Prediction.var_output); the keys are VarianceType's values
VARIANCE_TYPES: dict[str, bool] = {"fixed_small": False, "fixed_large": False, "learned": True, "learned_range": True}


def is_learned_variance(variance_type: str) -> bool:
    """Whether ``variance_type`` is predicted by the network; an unknown name is a ConfigError listing the valid ones."""
    return lookup(VARIANCE_TYPES, variance_type, "variance type")


def _as_float64_array(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains non-finite values")
    return arr


class GaussianProcess:
    """Forward process q and the Gaussian reverse-process algebra of DDPM (Ho et al. 2020, Sec. 2).

    Owns no weights. Build it from a schedule (``get_betas``) or with ``respace`` from another process.

    Args:
        betas: ``[T]`` noise variances, each in (0, 1].
        timestep_map: ``[T]`` int64, the base-model timestep of each index of this process (what a denoiser
            trained on the base process must be called with). Default ``arange(T)``.
        alphas_cumprod: ``[T]`` alpha-bar to store verbatim instead of ``cumprod(1 - betas)`` (``respace``
            uses it so that kept steps have bit-identical alpha-bar); must agree with ``betas`` to 1e-10.

    Attributes:
        num_timesteps: T.
        timestep_map: ``[T]`` int64 CPU tensor.
        betas, alphas, alphas_cumprod, alphas_cumprod_prev, sqrt_alphas_cumprod,
        sqrt_one_minus_alphas_cumprod, log_betas, posterior_variance, posterior_log_variance_clipped,
        posterior_mean_coef1, posterior_mean_coef2, snr: ``[T]`` float64 CPU tensors.
    """

    def __init__(
        self,
        betas: Sequence[float] | np.ndarray | torch.Tensor,
        *,
        timestep_map: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        alphas_cumprod: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        b = _as_float64_array(betas, "betas")
        if np.any(b <= 0) or np.any(b > 1):
            bad = int(np.flatnonzero((b <= 0) | (b > 1))[0])
            raise ValueError(f"betas must lie in (0, 1]; betas[{bad}] = {b[bad]!r}")
        T = b.size
        if alphas_cumprod is None:
            abar = np.cumprod(1.0 - b)
        else:
            abar = _as_float64_array(alphas_cumprod, "alphas_cumprod")
            expected = np.cumprod(1.0 - b)
            if abar.shape != b.shape or not np.allclose(abar, expected, rtol=1e-10, atol=1e-14):
                raise ValueError("alphas_cumprod does not match cumprod(1 - betas)")
        if timestep_map is None:
            tmap = torch.arange(T, dtype=torch.int64)
        else:
            tmap = torch.as_tensor(np.asarray(timestep_map), dtype=torch.int64).reshape(-1).clone()
            if tmap.numel() != T:
                raise ValueError(f"timestep_map has {tmap.numel()} entries, betas has {T}")
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        posterior_variance = b * (1.0 - abar_prev) / (1.0 - abar)
        # beta-tilde_0 = 0; like improved-diffusion, the log is clipped by reusing beta-tilde_1 at t = 0
        clipped = np.concatenate([posterior_variance[1:2], posterior_variance[1:]]) if T > 1 else b.copy()
        with np.errstate(divide="ignore"):
            snr = abar / (1.0 - abar)
        tables = {
            "betas": b,
            "alphas": 1.0 - b,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
            "log_betas": np.log(b),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": np.log(clipped),
            "posterior_mean_coef1": b * np.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(1.0 - b) / (1.0 - abar),
            "snr": snr,
            # derived tables used per call, precomputed so that every gather hits the cache below
            "one_minus_alphas_cumprod": 1.0 - abar,
            "log_one_minus_alphas_cumprod": np.log1p(-abar),
            "fixed_large_log_variance": np.concatenate([np.log(clipped[:1]), np.log(b[1:])]),
        }
        for name, arr in tables.items():
            setattr(self, name, torch.from_numpy(np.ascontiguousarray(arr)))
        self.num_timesteps = T
        self.timestep_map = tmap
        self._table_names = {name: name for name in tables}
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def from_schedule(cls, name: str, num_timesteps: int = 1000, *,
                      rescale_zero_terminal_snr: bool = False) -> GaussianProcess:
        """The base process of a named schedule: ``GaussianProcess(get_betas(name, num_timesteps, ...))``."""
        from ldmkit.diffusion.schedules import get_betas

        return cls(get_betas(name, num_timesteps, rescale_zero_terminal_snr=rescale_zero_terminal_snr))

    def __repr__(self) -> str:
        return (f"GaussianProcess(T={self.num_timesteps}, alpha-bar {float(self.alphas_cumprod[0]):.6g} -> "
                f"{float(self.alphas_cumprod[-1]):.6g}, model timesteps {int(self.timestep_map[0])}.."
                f"{int(self.timestep_map[-1])})")

    # ------------------------------------------------------------------------------------------- helpers

    def check_timesteps(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``t`` as int64 ``[N]`` on ``like``'s device, checked against the batch size and (on the CPU) the range."""
        n = like.shape[0]
        if isinstance(t, (int, np.integer)):
            t = torch.full((n,), int(t), dtype=torch.int64)
        if not isinstance(t, torch.Tensor) or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"t must be an integer tensor of shape [N], got {type(t).__name__} "
                            f"{getattr(t, 'dtype', '')}")
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"t must have shape [{n}] (the batch size), got {list(t.shape)}")
        if t.device.type == "cpu" and n:  # on an accelerator the check would cost a device sync
            lo, hi = torch.aminmax(t)
            if int(lo) < 0 or int(hi) >= self.num_timesteps:
                raise ValueError(f"t must lie in [0, {self.num_timesteps - 1}], got values {int(lo)}..{int(hi)}")
        return t.to(device=like.device, dtype=torch.int64)

    def _rows(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at a checked ``t``, as ``[N, 1, ...]`` in ``like``'s dtype/device (tables cached per pair)."""
        key = (name, like.device, like.dtype)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = getattr(self, name).to(device=like.device).to(like.dtype)
        return table[t].reshape(-1, *([1] * (like.dim() - 1)))

    def gather(self, table: torch.Tensor | str, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """Rows ``table[t]`` as ``[N, 1, ..., 1]`` (broadcastable to ``like``) in ``like``'s dtype and device.

        Args:
            table: a ``[T]`` tensor, or the name of one of this process's tables (faster: cached per device
                and dtype).
            t: ``[N]`` integer timesteps (or a Python int for all examples).
            like: ``[N, ...]`` tensor whose dtype, device and rank the result follows.
        """
        t = self.check_timesteps(t, like)
        if isinstance(table, str):
            return self._rows(lookup(self._table_names, table, "process table"), t, like)
        values = table.to(t.device)[t]
        return values.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """``timestep_map[t]``: the timesteps to call a denoiser (trained on the base process) with. ``[N]`` int64."""
        key = ("timestep_map", t.device, torch.int64)
        tmap = self._cache.get(key)
        if tmap is None:
            tmap = self._cache[key] = self.timestep_map.to(t.device)
        return tmap[t.long()]

    # ---------------------------------------------------------------------------------------- forward q

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One forward step q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), Ho et al. 2020, Eq. 2.

        Args:
            x_prev: ``[N, ...]`` x_{t-1} (the data x0 when t = 0).
            t: ``[N]`` int64 in [0, T-1].
            noise: ``[N, ...]`` standard normal, drawn from ``generator`` if omitted.

        Returns:
            ``[N, ...]`` a draw of x_t.
        """
        if noise is None:
            noise = torch.randn(x_prev.shape, generator=generator, device=x_prev.device, dtype=x_prev.dtype)
        t = self.check_timesteps(t, x_prev)
        beta = self._rows("betas", t, x_prev)
        return torch.sqrt(1.0 - beta) * x_prev + torch.sqrt(beta) * noise

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Marginal q(x_t | x0) = N(sqrt(alpha-bar_t) x0, (1 - alpha-bar_t) I), Ho et al. 2020, Eq. 4.

        Returns:
            (mean ``[N, ...]``, variance ``[N, 1, ...]``, log_variance ``[N, 1, ...]``).
        """
        t = self.check_timesteps(t, x0)
        mean = self._rows("sqrt_alphas_cumprod", t, x0) * x0
        return (mean, self._rows("one_minus_alphas_cumprod", t, x0),
                self._rows("log_one_minus_alphas_cumprod", t, x0))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Closed-form draw x_t = sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps, Ho et al. 2020, Eq. 4.

        Args:
            x0: ``[N, ...]`` clean data.
            t: ``[N]`` int64 in [0, T-1].
            noise: ``[N, ...]`` eps ~ N(0, I), drawn from ``generator`` if omitted.
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {list(noise.shape)} differs from x0 shape {list(x0.shape)}")
        t = self.check_timesteps(t, x0)
        return self._rows("sqrt_alphas_cumprod", t, x0) * x0 + self._rows("sqrt_one_minus_alphas_cumprod", t, x0) * noise

    # ---------------------------------------------------------------------------------------- posterior

    def q_posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward-process posterior q(x_{t-1} | x_t, x0) = N(mu-tilde_t, beta-tilde_t I), Ho et al. 2020, Eq. 6-7.

        mu-tilde_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
        beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.

        Args:
            x0, x_t: ``[N, ...]``.
            t: ``[N]`` int64 in [0, T-1]; at t = 0 the posterior is a point mass at x0 (variance 0).

        Returns:
            (mean ``[N, ...]``, variance ``[N, 1, ...]``, log_variance_clipped ``[N, 1, ...]``, whose value at
            t = 0 is log beta-tilde_1 instead of -inf).
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 shape {list(x0.shape)} differs from x_t shape {list(x_t.shape)}")
        t = self.check_timesteps(t, x_t)
        mean = self._rows("posterior_mean_coef1", t, x_t) * x0 + self._rows("posterior_mean_coef2", t, x_t) * x_t
        return (mean, self._rows("posterior_variance", t, x_t), self._rows("posterior_log_variance_clipped", t, x_t))

    # ------------------------------------------------------------------------------------------ reverse p

    def p_log_variance(self, var_output: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor | int,
                       variance_type: VarianceType, *, clamp_learned_range: bool = True) -> torch.Tensor:
        """log Sigma_theta(x_t, t) for each variance type (Ho et al. 2020 Sec. 3.2; Nichol & Dhariwal 2021 Eq. 15).

        - ``fixed_small``: log beta-tilde_t (clipped at t = 0 to log beta-tilde_1).
        - ``fixed_large``: log beta_t, except log beta-tilde_1 at t = 0 (as improved-diffusion, for a better
          decoder likelihood).
        - ``learned``: ``var_output`` is the log-variance itself.
        - ``learned_range``: log Sigma = (v + 1)/2 log beta_t + (1 - v)/2 log beta-tilde_t with v = ``var_output``
          (the two ends are the optimal variances for deterministic x0 and for x0 ~ N(0, I), Ho et al.
          Sec. 3.2). With ``clamp_learned_range`` (the default, for sampling and NLL evaluation) v is clamped
          to [-1, 1], so Sigma lies in [beta-tilde_t, beta_t]. Training passes ``False``, as improved-diffusion
          (which never clamps): a clamp would give every v outside [-1, 1] zero gradient from L_vlb.

        Returns:
            ``[N, ...]`` log-variance, expanded to ``x_t``'s shape.
        """
        if is_learned_variance(variance_type):
            if var_output is None:
                raise ValueError(f"variance type {variance_type!r} needs Prediction.var_output, got None "
                                 "(is the network built with learn_variance=True?)")
            if var_output.shape != x_t.shape:
                raise ValueError(f"var_output shape {list(var_output.shape)} differs from x_t shape {list(x_t.shape)}")
        t = self.check_timesteps(t, x_t)
        if variance_type == "fixed_small":
            log_var = self._rows("posterior_log_variance_clipped", t, x_t)
        elif variance_type == "fixed_large":
            log_var = self._rows("fixed_large_log_variance", t, x_t)
        elif variance_type == "learned":
            log_var = var_output
        else:
            v = var_output.clamp(-1.0, 1.0) if clamp_learned_range else var_output
            frac = (v + 1.0) / 2.0
            log_max = self._rows("log_betas", t, x_t)
            log_min = self._rows("posterior_log_variance_clipped", t, x_t)
            log_var = frac * log_max + (1.0 - frac) * log_min
        return log_var.expand_as(x_t)

    def p_mean_variance(
        self,
        prediction: Prediction,
        x_t: torch.Tensor,
        t: torch.Tensor | int,
        variance_type: VarianceType,
        *,
        clip_x0: bool = False,
        clamp_learned_range: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reverse step p_theta(x_{t-1} | x_t) = N(mu_theta, Sigma_theta), Ho et al. 2020 Eq. 1 and 7; Nichol & Dhariwal Eq. 15.

        The mean is the posterior mean mu-tilde_t(x0_hat, x_t) of the predicted clean sample (Ho Eq. 7; with
        x0_hat written through eps_hat it equals Ho Eq. 11). The variance follows ``p_log_variance``.

        Args:
            prediction: the denoiser's ``Prediction`` for ``x_t``; uses ``x0`` and, for learned variance types,
                ``var_output`` (``[N, ...]``).
            x_t: ``[N, ...]``.
            t: ``[N]`` int64 in [0, T-1], this process's own index (not ``timestep_map[t]``).
            variance_type: one of ``VARIANCE_TYPES``.
            clip_x0: clamp x0_hat to [-1, 1] first (pixel-space sampling).
            clamp_learned_range: clamp a ``learned_range`` v to [-1, 1] (see ``p_log_variance``; training
                passes ``False``).

        Returns:
            (mean, variance, log_variance), each ``[N, ...]`` like ``x_t``.
        """
        x0 = prediction.x0.clamp(-1.0, 1.0) if clip_x0 else prediction.x0
        mean, _, _ = self.q_posterior_mean_variance(x0, x_t, t)
        log_var = self.p_log_variance(prediction.var_output, x_t, t, variance_type,
                                      clamp_learned_range=clamp_learned_range)
        return mean, torch.exp(log_var), log_var

    # ----------------------------------------------------------------------------------------- respacing

    def respace(self, timesteps: Sequence[int] | np.ndarray | torch.Tensor) -> GaussianProcess:
        """A process on a subset of steps that keeps their alpha-bar exactly (Nichol & Dhariwal 2021, Sec. 4).

        For kept indices k_1 < ... < k_S the new betas are beta'_i = 1 - abar_{k_i} / abar_{k_{i-1}} (abar_{k_0}
        = 1); ``alphas_cumprod`` of the result is ``self.alphas_cumprod[k]`` bit for bit, and its
        ``timestep_map`` is ``self.timestep_map[k]`` (so respacing a respaced process composes).

        Args:
            timesteps: indices into this process, unique, in [0, T-1] (any order; they are sorted).
        """
        idx = np.asarray(timesteps.cpu() if isinstance(timesteps, torch.Tensor) else timesteps)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"respace: timesteps must be a non-empty 1-D integer sequence, got {idx!r}")
        idx = np.sort(idx.astype(np.int64))
        if np.any(np.diff(idx) == 0):
            raise ValueError(f"respace: timesteps contain duplicates: {sorted(set(idx[1:][np.diff(idx) == 0]))}")
        if idx[0] < 0 or idx[-1] >= self.num_timesteps:
            raise ValueError(f"respace: timesteps must lie in [0, {self.num_timesteps - 1}], got {idx[0]}..{idx[-1]}")
        abar = self.alphas_cumprod.numpy()[idx]
        prev = np.concatenate([[1.0], abar[:-1]])
        betas = 1.0 - abar / prev
        return GaussianProcess(betas, timestep_map=self.timestep_map[torch.from_numpy(idx)], alphas_cumprod=abar)

"""Timestep samplers for training: uniform, and Improved DDPM's loss-second-moment importance sampler.

A sampler draws ``t`` ``[N]`` with probabilities p_t and returns importance weights 1 / (T p_t), so that
``(loss * weights).mean()`` is an unbiased estimate of the uniform-t average. In distributed training
``LossSecondMomentSampler.update_with_losses`` gathers every rank's ``(t, loss)`` itself (a collective), so
all ranks keep the same history.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from ldmkit.registry import lookup


class TimestepSampler(ABC):
    """Base class: a distribution over ``[0, T-1]`` that may adapt to observed losses."""

    def __init__(self, num_timesteps: int) -> None:
        if int(num_timesteps) < 1:
            raise ValueError(f"num_timesteps must be positive, got {num_timesteps!r}")
        self.num_timesteps = int(num_timesteps)

    @abstractmethod
    def weights(self) -> np.ndarray:
        """``[T]`` non-negative float64 sampling weights (not necessarily normalised)."""

    def sample(self, batch_size: int, *, device: torch.device | str | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``batch_size`` timesteps.

        Args:
            generator: a CPU ``torch.Generator`` (sampling happens on the CPU, results are moved to ``device``).

        Returns:
            (t ``[N]`` int64, weights ``[N]`` float32 = 1 / (T p_t)).
        """
        w = self.weights()
        p = torch.from_numpy(w / w.sum())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = (1.0 / (self.num_timesteps * p[t])).float()
        return t.to(device), weights.to(device)

    def update_with_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses at timesteps ``t`` (``[N]`` each). No-op for non-adaptive samplers."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint (safetensors-compatible)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got keys {sorted(state)}")


class UniformSampler(TimestepSampler):
    """t ~ Uniform{0, ..., T-1} (Ho et al. 2020, Alg. 1)."""

    def weights(self) -> np.ndarray:
        return np.ones(self.num_timesteps, dtype=np.float64)


class LossSecondMomentSampler(TimestepSampler):
    """Importance sampling p_t ∝ sqrt(E[L_t^2]), Nichol & Dhariwal 2021, Eq. 18.

    Keeps the last ``history_per_term`` losses of every t; until each t has a full history the sampler is
    uniform (warm-up). After that p_t = (1 - uniform_prob) sqrt(mean(L_t^2)) / sum + uniform_prob / T.

    Args:
        num_timesteps: T.
        history_per_term: losses kept per t (10 in the paper).
        uniform_prob: probability mass mixed in uniformly (0.001 in improved-diffusion).
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if history_per_term < 1 or not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"history_per_term must be >= 1 and uniform_prob in [0, 1], got "
                             f"{history_per_term!r}, {uniform_prob!r}")
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        self._history = np.zeros((self.num_timesteps, self.history_per_term), dtype=np.float64)
        self._counts = np.zeros(self.num_timesteps, dtype=np.int64)

    @property
    def warmed_up(self) -> bool:
        """Whether every t has ``history_per_term`` recorded losses."""
        return bool(np.all(self._counts == self.history_per_term))

    def weights(self) -> np.ndarray:
        if not self.warmed_up:
            return np.ones(self.num_timesteps, dtype=np.float64)
        w = np.sqrt(np.mean(self._history**2, axis=-1))
        w = w / w.sum()
        return w * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses at timesteps ``t`` (``[N]`` each), dropping the oldest of a full history.

        Under ``torch.distributed`` (initialised, world size > 1) this is a collective: every rank's
        ``(t, losses)`` are gathered first (batch sizes may differ between ranks) and recorded in rank order,
        so all ranks keep the identical history and draw from the identical distribution. Every rank must
        then call it at the same steps.
        """
        t, losses = t.detach().reshape(-1), losses.detach().reshape(-1)
        if t.numel() != losses.numel():
            raise ValueError(f"update_with_losses: {t.numel()} timesteps but {losses.numel()} losses")
        t, losses = self._gather_across_ranks(t, losses)
        ts, ls = t.cpu().tolist(), losses.double().cpu().tolist()
        bad = [ti for ti in ts if not 0 <= ti < self.num_timesteps]
        if bad:
            raise ValueError(f"update_with_losses: timestep {bad[0]} outside [0, {self.num_timesteps - 1}]")
        for ti, li in zip(ts, ls):
            if self._counts[ti] == self.history_per_term:  # full: drop the oldest
                self._history[ti, :-1] = self._history[ti, 1:]
                self._history[ti, -1] = li
            else:
                self._history[ti, self._counts[ti]] = li
                self._counts[ti] += 1

    @staticmethod
    def _gather_across_ranks(t: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ranks' ``t`` and ``losses`` concatenated in rank order (unchanged outside distributed runs).

        Tensors stay on ``losses.device`` (NCCL gathers CUDA tensors, gloo CPU ones); each rank pads to the
        largest batch so that ``all_gather`` sees equal shapes, then the padding is cut off again.
        """
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return t, losses
        world, device = dist.get_world_size(), losses.device
        size = torch.tensor([t.numel()], dtype=torch.int64, device=device)
        sizes = [torch.zeros_like(size) for _ in range(world)]
        dist.all_gather(sizes, size)
        counts = [int(n) for n in sizes]
        t_pad = torch.zeros(max(counts), dtype=torch.int64, device=device)
        loss_pad = torch.zeros(max(counts), dtype=torch.float64, device=device)
        t_pad[: t.numel()], loss_pad[: t.numel()] = t.to(device=device, dtype=torch.int64), losses.double()
        t_all, loss_all = [torch.empty_like(t_pad) for _ in counts], [torch.empty_like(loss_pad) for _ in counts]
        dist.all_gather(t_all, t_pad)
        dist.all_gather(loss_all, loss_pad)
        return (torch.cat([x[:n] for x, n in zip(t_all, counts)]),
                torch.cat([x[:n] for x, n in zip(loss_all, counts)]))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"history": torch.from_numpy(self._history.copy()), "counts": torch.from_numpy(self._counts.copy())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"history", "counts"}:
            raise ValueError(f"LossSecondMomentSampler state needs keys ['counts', 'history'], got {sorted(state)}")
        history = state["history"].detach().cpu().double().numpy()
        counts = state["counts"].detach().cpu().long().numpy()
        if history.shape != self._history.shape or counts.shape != self._counts.shape:
            raise ValueError(f"LossSecondMomentSampler state has history {history.shape} / counts {counts.shape}, "
                             f"expected {self._history.shape} / {self._counts.shape}")
        if counts.min() < 0 or counts.max() > self.history_per_term:
            raise ValueError(f"LossSecondMomentSampler state has counts in [{counts.min()}, {counts.max()}], "
                             f"expected [0, history_per_term={self.history_per_term}]")
        # history[t, :counts[t]] holds t's losses oldest first, so these two arrays are the whole state
        self._history, self._counts = history.copy(), counts.copy()


TIMESTEP_SAMPLERS = {"uniform": UniformSampler, "loss_second_moment": LossSecondMomentSampler}


def create_timestep_sampler(name: str, num_timesteps: int, **options) -> TimestepSampler:
    """Build a sampler from ``TIMESTEP_SAMPLERS`` by name (errors list the valid names)."""
    return lookup(TIMESTEP_SAMPLERS, name, "timestep sampler")(num_timesteps, **options)

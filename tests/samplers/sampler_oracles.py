"""Analytic oracle denoisers: for Gaussian and Gaussian-mixture data the optimal denoiser is closed-form.

For x0 ~ N(mu, Sigma), Sigma = U diag(lam) U^T, and x_t = a x0 + s eps (a = sqrt(abar), s = sqrt(1-abar)):
E[x0 | x_t] = mu + U diag(a lam / (a^2 lam + s^2)) U^T (x_t - a mu), and eps_hat = (x_t - a x0_hat) / s.
For a mixture, each component gives that mean and is weighted by its posterior responsibility, computed
from the marginal N(a mu_k, a^2 Sigma_k + s^2 I). Samples are [N, d] float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ldmkit.types import Prediction


def random_covariance(d: int, rng: np.random.Generator, lo: float = 0.05, hi: float = 1.5):
    """A random SPD matrix with eigenvalues spread log-uniformly in [lo, hi]; returns (U, lam)."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.exp(np.linspace(math.log(lo), math.log(hi), d))
    return torch.from_numpy(q), torch.from_numpy(lam)


class MixtureOracle:
    """Exact E[x0 | x_t] for a mixture of Gaussians (one component = a Gaussian)."""

    def __init__(self, alphas_cumprod, weights, means, eigvecs, eigvals, *, diagonal: bool = False):
        self.abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.log_w = torch.log(torch.as_tensor(weights, dtype=torch.float64))
        self.means = [torch.as_tensor(m, dtype=torch.float64) for m in means]
        self.eigvecs = [torch.as_tensor(u, dtype=torch.float64) for u in eigvecs]
        self.eigvals = [torch.as_tensor(v, dtype=torch.float64) for v in eigvals]
        self.diagonal = diagonal  # eigvecs = I: elementwise only (bitwise independent of batch size)
        self.calls = []

    @property
    def mean(self) -> torch.Tensor:
        w = self.log_w.exp()
        return sum(wk * mk for wk, mk in zip(w, self.means))

    @property
    def cov(self) -> torch.Tensor:
        w = self.log_w.exp()
        m = self.mean
        second = sum(wk * (u @ torch.diag(v) @ u.T + torch.outer(mk, mk))
                     for wk, mk, u, v in zip(w, self.means, self.eigvecs, self.eigvals))
        return second - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.log_w.exp(), n, replacement=True, generator=generator)
        out = torch.empty(n, self.means[0].numel(), dtype=torch.float64)
        for j, (m, u, v) in enumerate(zip(self.means, self.eigvecs, self.eigvals)):
            z = torch.randn(n, m.numel(), generator=generator, dtype=torch.float64)
            out[k == j] = (m + (z * v.sqrt()) @ u.T)[k == j]
        return out

    def _rotate(self, x, u, inverse=False):
        if self.diagonal:
            return x
        return x @ u if not inverse else x @ u.T

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> Prediction:
        self.calls.append((x_t.shape[0], t.clone()))
        shape = x_t.shape
        x = x_t.reshape(shape[0], -1).to(torch.float64)
        a2 = self.abar.to(x.device)[t].view(-1, 1)
        a, s2 = a2.sqrt(), 1.0 - a2
        comps, logps = [], []
        for log_w, m, u, lam in zip(self.log_w, self.means, self.eigvecs, self.eigvals):
            z = self._rotate(x - a * m, u)  # coordinates in the eigenbasis
            var = a2 * lam + s2  # marginal eigenvalues
            comps.append(m + self._rotate(z * (a * lam / var), u, inverse=True))
            if len(self.means) > 1:
                logps.append(log_w - 0.5 * ((z * z / var) + var.log()).sum(dim=1))
        if len(comps) == 1:
            x0 = comps[0]
        else:
            resp = torch.softmax(torch.stack(logps, dim=1), dim=1)  # [N, K]
            x0 = sum(resp[:, k : k + 1] * comps[k] for k in range(len(comps)))
        eps = (x - a * x0) / s2.sqrt()
        return Prediction(x0=x0.reshape(shape).to(x_t.dtype), eps=eps.reshape(shape).to(x_t.dtype))


def gaussian_oracle(alphas_cumprod, d: int, seed: int = 0, diagonal: bool = False) -> MixtureOracle:
    rng = np.random.default_rng(seed)
    u, lam = random_covariance(d, rng)
    if diagonal:
        u = torch.eye(d, dtype=torch.float64)
        lam = lam[torch.from_numpy(rng.permutation(d))]
    mean = torch.from_numpy(rng.uniform(-0.5, 0.5, d))
    return MixtureOracle(alphas_cumprod, [1.0], [mean], [u], [lam], diagonal=diagonal)


def mixture_oracle(alphas_cumprod, d: int, seed: int = 0) -> MixtureOracle:
    rng = np.random.default_rng(seed)
    u1, lam1 = random_covariance(d, rng, 0.02, 0.3)
    u2, lam2 = random_covariance(d, rng, 0.05, 0.5)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    m1, m2 = torch.from_numpy(0.8 * direction), torch.from_numpy(-0.8 * direction)
    return MixtureOracle(alphas_cumprod, [0.35, 0.65], [m1, m2], [u1, u2], [lam1, lam2])

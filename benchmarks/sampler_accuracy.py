"""Exact sampling error of the deterministic samplers on Gaussian data, by grid and step count.

With data x0 ~ N(mu, Sigma) the optimal denoiser is linear, so DDIM (eta = 0) and DPM-Solver++(2M) are
affine maps x_T -> A x_T + b and their output is exactly N(b, A A^T): no Monte Carlo error. The table
gives the whitened covariance error ||L^-1 A A^T L^-T - I||_F (Sigma = L L^T) for a d-dimensional
Gaussian whose eigenvalues are spread log-uniformly in [0.05, 1.5], linear beta schedule, T = 1000.

Usage::

    python benchmarks/sampler_accuracy.py [--dim 16] [--steps 5 10 20 50 100]
"""

from __future__ import annotations

import argparse
import math

import torch

from ldmkit.diffusion.process import GaussianProcess
from ldmkit.diffusion.schedules import get_betas
from ldmkit.samplers import SAMPLERS, make_timestep_grid
from ldmkit.types import Prediction


def gaussian_denoiser(abar_table, eigvals):
    """Exact E[x0 | x_t] for x0 ~ N(0, diag(eigvals)) (the samplers are rotation-equivariant)."""
    def den(x_t, t, cond=None):
        a2 = abar_table[t].view(-1, 1)
        x0 = x_t * (a2.sqrt() * eigvals / (a2 * eigvals + 1 - a2))
        return Prediction(x0=x0, eps=(x_t - a2.sqrt() * x0) / (1 - a2).sqrt())
    return den


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    parser.add_argument("--schedule", default="linear")
    args = parser.parse_args(argv)
    process = GaussianProcess(get_betas(args.schedule, 1000))
    eigvals = torch.exp(torch.linspace(math.log(0.05), math.log(1.5), args.dim, dtype=torch.float64))
    den = gaussian_denoiser(process.alphas_cumprod, eigvals)
    basis = torch.cat([torch.zeros(1, args.dim, dtype=torch.float64), torch.eye(args.dim, dtype=torch.float64)])
    print(f"whitened covariance error, d={args.dim}, {args.schedule} schedule, T=1000 (lower is better)")
    print(f"{'grid':10s} {'sampler':9s} " + " ".join(f"{s:>7d}" for s in args.steps))
    for grid_name in ("uniform", "quadratic", "trailing", "logsnr"):
        for name in ("ddim", "dpmpp_2m"):
            errs = []
            for steps in args.steps:
                grid = make_timestep_grid(grid_name, 1000, steps, alphas_cumprod=process.alphas_cumprod)
                out = SAMPLERS[name].fn(den, basis, grid, process)
                a = out[1:] - out[0]  # rows: A^T
                cov = a.T @ a
                errs.append(float((cov / torch.outer(eigvals.sqrt(), eigvals.sqrt()) - torch.eye(args.dim,
                                   dtype=torch.float64)).norm()))
            print(f"{grid_name:10s} {name:9s} " + " ".join(f"{e:7.3f}" for e in errs))


if __name__ == "__main__":
    main()

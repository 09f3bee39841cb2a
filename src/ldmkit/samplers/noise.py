"""Per-sample seeded noise: sample ``i`` draws every random number from its own generator, so a sample
depends on its seed only, not on the batch it was drawn in or its position in it.

Pass the list of generators from :func:`make_generators` both to :func:`randn` (for ``x_T``) and to the
sampler (``generator=``): the sampler keeps drawing each row from the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` per seed (on ``device``; CPU generators give the same numbers everywhere)."""
    gens = []
    for seed in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(seed))
        gens.append(g)
    return gens


def randn(shape: Sequence[int], generator: Generators = None, *, device: torch.device | str | None = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal ``[N, ...]``; with a list of generators, row ``i`` comes from ``generator[i]``.

    Numbers are drawn in float32 on each generator's device, then cast to ``dtype`` and moved to
    ``device``: a seed gives the same noise in every dtype (and float64 draws, 3x slower on CPU, are
    not needed for sampling).
    """
    shape = tuple(int(s) for s in shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        out = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        return out.to(device=device, dtype=dtype)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"randn: {len(gens)} generators for a batch of {shape[0]}; pass one per sample")
    if not gens:
        return torch.empty(shape, device=device, dtype=dtype)
    rows = [torch.randn(shape[1:], generator=g, device=g.device, dtype=torch.float32).to(device) for g in gens]
    return torch.stack(rows).to(dtype)


def randn_like(x: torch.Tensor, generator: Generators = None) -> torch.Tensor:
    """:func:`randn` with ``x``'s shape, device and dtype."""
    return randn(x.shape, generator, device=x.device, dtype=x.dtype)

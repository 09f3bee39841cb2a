"""RePaint inpainting with any trained denoiser (Lugmayr et al. 2022, "RePaint", Alg. 1 and Sec. 4.2).

The reverse chain is DDPM's (Ho et al. 2020, Alg. 2) on the grid's respaced process; after each step the
known region is replaced by a fresh draw of ``q(x_{t-1} | x0)`` of the known content, and the unknown
region keeps the model's sample. ``resample`` R > 1 "jumps back": at every ``jump_length``-th state the
chain is re-noised ``jump_length`` single steps with ``q(x_t | x_{t-1})`` and denoised again, R - 1 times,
so that the generated region has time to harmonise with the known one.

Not in :data:`ldmkit.samplers.SAMPLERS`: it needs the known content and the mask, which the shared
sampler signature does not carry.
"""

from __future__ import annotations

import torch

from ldmkit.samplers.common import Callback, call_denoiser, check_grid, check_x, postprocess_x0
from ldmkit.samplers.noise import Generators, randn_like
from ldmkit.types import Cond

DOWN, UP = -1, 1


def repaint_schedule(num_steps: int, jump_length: int = 10, resample: int = 1) -> list[int]:
    """The moves of RePaint's chain over ``num_steps`` states: ``-1`` = one denoising step, ``+1`` = one
    re-noising step (Lugmayr et al. 2022, Sec. 4.2, "jump length j" and "resampling R").

    The state starts at ``num_steps`` (pure noise) and ends at 0 (clean). At each state ``s`` in
    ``0, j, 2j, ...`` below ``num_steps - j`` the chain goes up ``j`` states ``R - 1`` times after arriving
    there (each time walking down again), so there are ``num_steps + (R - 1) * j * #jump points`` denoising
    moves in all; ``R = 1`` is the plain chain.
    """
    if num_steps < 1:
        raise ValueError(f"repaint: num_steps={num_steps} must be >= 1")
    if resample < 1:
        raise ValueError(f"repaint: resample={resample} must be >= 1")
    if resample > 1 and not 1 <= jump_length < num_steps:
        raise ValueError(f"repaint: jump_length={jump_length} must be in [1, {num_steps - 1}] "
                         f"(below the {num_steps} steps) when resample={resample} > 1")
    jumps = {s: resample - 1 for s in range(0, num_steps - jump_length, jump_length)} if resample > 1 else {}
    moves, s = [], num_steps
    while s > 0:
        s -= 1
        moves.append(DOWN)
        if jumps.get(s, 0) > 0:
            jumps[s] -= 1
            moves.extend([UP] * jump_length)
            s += jump_length
    return moves


def sample_repaint(denoiser, x_T: torch.Tensor, timesteps, process, *, known: torch.Tensor, mask: torch.Tensor,
                   cond: Cond | None = None, generator: Generators = None, callback: Callback | None = None,
                   resample: int = 1, jump_length: int | None = None, variance_type: str = "fixed_large",
                   clip_denoised: bool = False, dynamic_threshold: float | None = None) -> torch.Tensor:
    """RePaint, Lugmayr et al. 2022, Alg. 1 (with Sec. 4.2's jumps of length ``jump_length``).

    Steps, on the process respaced to ``timesteps`` (``process.respace``, as :func:`sample_ddpm` does),
    with state ``s`` holding ``x`` at respaced index ``s - 1`` (``s = 0``: clean):

    1. down ``s -> s - 1``: ``x_unknown ~ p(x_{s-2} | x_{s-1})`` (DDPM posterior step with the model's x0,
       Ho et al. Eq. 7; no noise on the last one); ``x_known ~ q(x_{s-2} | x0) = q_sample(known, s - 2)``
       (``known`` itself at the clean state); ``x = mask * x_unknown + (1 - mask) * x_known``.
    2. up ``s -> s + 1``: ``x ~ q(x_s | x_{s-1}) = process.q_step(x, s)`` (Alg. 1, line 9).

    Code name -> paper symbol: ``known`` -> x0 (the masked input), ``mask`` -> 1 - m (``1`` = to fill),
    ``resample`` -> U (R in Sec. 4.2), ``jump_length`` -> j.

    Args:
        x_T: ``[N, C, H, W]`` starting noise.
        timesteps: strictly decreasing grid (``uniform`` in Lugmayr et al.); its length is the number of
            states, T' (250 in the paper).
        known: ``[N, C, H, W]`` the content to keep (image, or its latent), same space as ``x_T``.
        mask: ``[N or 1, 1 or C, H, W]``, 1 (or True) where the region is generated, 0 where ``known`` is
            kept (values above 0.5 count as 1).
        resample: R >= 1; R = 1 is the plain chain.
        jump_length: j; default ``min(10, T' - 1)``.
        variance_type / clip_denoised / dynamic_threshold: as for :func:`ldmkit.samplers.sample_ddpm`.

    Random draws, in this order from ``generator``: per up move one for ``q_step``; per down move one for the
    posterior noise and one for ``q_sample`` of the known region (neither on the last move to the clean
    state; none for the known region when the mask fills everything, so that R = 1 then equals
    :func:`~ldmkit.samplers.sample_ddpm` draw for draw).

    Returns:
        ``[N, C, H, W]``; where ``mask`` is 0 it equals ``known`` exactly. ``callback`` is called once per
        denoising move (``i`` counts them; ``t`` is the base timestep the move started from).
    """
    check_x(x_T, "repaint")
    if known.shape != x_T.shape:
        raise ValueError(f"repaint: known {tuple(known.shape)} must have x_T's shape {tuple(x_T.shape)}")
    if mask.dim() != x_T.dim() or mask.shape[-2:] != x_T.shape[-2:] or mask.shape[0] not in (1, x_T.shape[0]) \
            or mask.shape[1] not in (1, x_T.shape[1]):
        raise ValueError(f"repaint: mask {tuple(mask.shape)} does not broadcast to x_T {tuple(x_T.shape)}")
    grid = check_grid(timesteps, process.num_timesteps, "repaint")
    if grid.numel() != process.num_timesteps:
        process = process.respace(grid.flip(0).tolist())
    num_states = process.num_timesteps
    if jump_length is None:
        jump_length = max(1, min(10, num_states - 1))
    fill = mask.to(device=x_T.device) > 0.5  # where/select, not a blend: the known region stays bit-exact
    known = known.to(x_T.dtype)
    all_fill = bool(fill.all())

    def batch_t(index: int) -> torch.Tensor:
        return torch.full((x_T.shape[0],), index, dtype=torch.int64, device=x_T.device)

    x, s = x_T, num_states
    for i, move in enumerate_downs(repaint_schedule(num_states, jump_length, resample)):
        if move == UP:  # re-noise one step: x_{s-1} -> x_s
            x = process.q_step(x, batch_t(s), randn_like(x, generator)).to(x_T.dtype)
            s += 1
            continue
        idx = s - 1  # process index of x
        pred = call_denoiser(denoiser, x, process, idx, cond)
        pred = postprocess_x0(pred, x, float(process.alphas_cumprod[idx]), clip_denoised=clip_denoised,
                              dynamic_threshold_percentile=dynamic_threshold)
        # the process checks variance_type (and that a learned one has the network's var_output)
        mean, variance, _ = process.p_mean_variance(pred, x, batch_t(idx), variance_type)
        unknown = mean.to(x_T.dtype)
        if idx > 0:
            unknown = unknown + variance.sqrt().to(x_T.dtype) * randn_like(x, generator)
        if all_fill:  # nothing known: no draw for it, so R = 1 is exactly sample_ddpm (same generator)
            x = unknown
        else:
            known_t = known if idx == 0 else \
                process.q_sample(known, batch_t(idx - 1), randn_like(x, generator)).to(x_T.dtype)
            x = torch.where(fill, unknown, known_t)
        s -= 1
        if callback is not None:
            callback({"x": x, "i": i, "t": int(process.timestep_map[idx]), "prediction": pred})
    return x


def enumerate_downs(moves: list[int]):
    """``(i, move)`` with ``i`` counting the denoising moves (``i`` of an up move = the next down's)."""
    i = 0
    for move in moves:
        yield i, move
        if move == DOWN:
            i += 1

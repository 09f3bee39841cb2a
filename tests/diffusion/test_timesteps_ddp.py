"""LossSecondMomentSampler under torch.distributed: a 2-process gloo group on CPU gathers every rank's losses,
and a state_dict round trip (through safetensors, as in checkpoints) reproduces the next draws exactly."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ldmkit.diffusion.timesteps import LossSecondMomentSampler

T, HISTORY, WORLD = 4, 3, 2


def _batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``rank``'s (t, losses) per step; batch sizes differ between ranks at steps 2 and 3.

    Losses encode (rank, step, t) so that each recorded value tells where it came from.
    """
    steps = [[0, 1, 2, 3], [0, 1, 2, 3, 0, 1] if rank == 0 else [2, 3], [0] if rank == 0 else [1, 1]]
    out = []
    for step, ts in enumerate(steps):
        t = torch.tensor(ts, dtype=torch.int64)
        out.append((t, 1.0 + 100.0 * rank + 10.0 * step + t.double() + 0.01 * torch.arange(len(ts))))
    return out


def _draws(sampler: LossSecondMomentSampler) -> tuple[torch.Tensor, torch.Tensor]:
    return sampler.sample(64, generator=torch.Generator().manual_seed(123))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                                         timeout=datetime.timedelta(seconds=60))
    try:
        sampler = LossSecondMomentSampler(T, history_per_term=HISTORY, uniform_prob=0.001)
        for t, losses in _batches(rank):
            sampler.update_with_losses(t, losses)
        save_file(sampler.state_dict(), str(Path(out_dir) / f"state{rank}.safetensors"))
        t, w = _draws(sampler)
        save_file({"t": t, "weights": w}, str(Path(out_dir) / f"draws{rank}.safetensors"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(180)
def test_two_ranks_keep_the_identical_gathered_history(tmp_path):
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    states = [load_file(str(tmp_path / f"state{r}.safetensors")) for r in range(WORLD)]
    draws = [load_file(str(tmp_path / f"draws{r}.safetensors")) for r in range(WORLD)]

    # Independent expectation: one process fed each step's batches concatenated in rank order.
    expected = LossSecondMomentSampler(T, history_per_term=HISTORY, uniform_prob=0.001)
    for step_batches in zip(*[_batches(r) for r in range(WORLD)]):
        expected.update_with_losses(torch.cat([t for t, _ in step_batches]), torch.cat([x for _, x in step_batches]))
    assert expected.warmed_up
    for state in states:
        assert torch.equal(state["counts"], expected.state_dict()["counts"])
        assert torch.equal(state["history"], expected.state_dict()["history"])
    history = states[0]["history"].numpy()
    assert (history > 100).any() and (history < 100).any()  # both ranks' losses are in every rank's history

    # Identical histories give identical draws on every rank, and a restored sampler draws the same again.
    assert all(torch.equal(d["t"], draws[0]["t"]) and torch.equal(d["weights"], draws[0]["weights"]) for d in draws)
    restored = LossSecondMomentSampler(T, history_per_term=HISTORY, uniform_prob=0.001)
    restored.load_state_dict(states[0])
    t, w = _draws(restored)
    assert torch.equal(t, draws[0]["t"]) and torch.equal(w, draws[0]["weights"])
    assert len(set(w.tolist())) > 1  # warmed up: the draws are not uniform, so the history matters


def test_round_trip_of_a_partly_filled_history_continues_identically(tmp_path):
    # Some t full (oldest dropped since), some partly filled, one empty: the fill counts must come back exactly.
    a = LossSecondMomentSampler(5, history_per_term=3)
    a.update_with_losses(torch.tensor([0, 0, 0, 0, 1, 1, 2]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
    save_file(a.state_dict(), str(tmp_path / "state.safetensors"))
    b = LossSecondMomentSampler(5, history_per_term=3)
    b.load_state_dict(load_file(str(tmp_path / "state.safetensors")))
    more_t, more_losses = torch.tensor([1, 2, 3, 4, 0, 1, 2, 3, 4, 2, 3, 4]), torch.arange(12.0) + 20
    for s in (a, b):
        s.update_with_losses(more_t, more_losses)
    assert a.warmed_up and b.warmed_up
    for key in ("history", "counts"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    ta, wa = _draws(a)
    tb, wb = _draws(b)
    assert torch.equal(ta, tb) and torch.equal(wa, wb)


def test_load_state_dict_refuses_impossible_counts():
    state = LossSecondMomentSampler(4, history_per_term=2).state_dict()
    state["counts"][1] = 3
    with pytest.raises(ValueError, match=r"counts in \[0, 3\], expected \[0, history_per_term=2\]"):
        LossSecondMomentSampler(4, history_per_term=2).load_state_dict(state)


def test_outside_distributed_runs_nothing_is_gathered():
    assert not torch.distributed.is_initialized()
    s = LossSecondMomentSampler(3, history_per_term=2)
    s.update_with_losses(torch.tensor([0, 1]), torch.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(s.state_dict()["counts"].numpy(), [1, 1, 0])

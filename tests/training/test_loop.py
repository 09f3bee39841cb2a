"""The training loop: exact resume (also mid-epoch), extending a run, the NaN/Inf guard, schedules, EMA."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from _training_helpers import (
    config_json,
    loss_trainer,
    metric_losses,
    noisy_loss,
    plain_loss,
    state_equal,
    tiny_config,
    toy_data,
    toy_model,
    train_cfg,
)

from ldmkit import pipelines
from ldmkit.config import MODEL_SECTIONS
from ldmkit.training import NonFiniteError, TrainingError, lr_at
from ldmkit.training import checkpoint as ck
from ldmkit.training.data_order import DataOrder
from ldmkit.training.ema import EMA, ema_decay_at


def _diffusion_trainer(out, cfg, **kw):
    torch.manual_seed(cfg.train.seed)
    process = pipelines.build_process(cfg)
    model = pipelines.build_denoiser(cfg, process)
    space = pipelines.build_space(cfg)
    return loss_trainer(model, pipelines.make_loss_fn(cfg, process, space), toy_data(40), cfg.train, out,
                   config=config_json(cfg), progress=False, model_sections=MODEL_SECTIONS, **kw)


@pytest.mark.parametrize("variance", ["fixed_large", "learned_range"])
def test_resume_mid_epoch_is_bit_identical(tmp_path, variance):
    """12 steps in one go == 7 steps, stop, resume to 12 (40 examples / batch 8: step 7 is mid-epoch 2)."""
    loss = "simple" if variance == "fixed_large" else "hybrid"
    extra = {"timestep_sampler": "loss_second_moment", "loss_type": "vlb"} if variance == "learned_range" else {}
    cfg = tiny_config(diffusion={"variance_type": variance, "loss_type": loss, **extra},
                      train={"checkpoint_every": 7, "grad_accum": 2})
    full = _diffusion_trainer(tmp_path / "full", cfg)
    full.run()
    part_cfg = tiny_config(diffusion={"variance_type": variance, "loss_type": loss, **extra},
                           train={"checkpoint_every": 7, "grad_accum": 2, "max_steps": 7})
    _diffusion_trainer(tmp_path / "part", part_cfg).run()
    assert DataOrder(40, 4, 1).position(7 * 2) == (1, 4)  # 14 micro-batches of 4: mid-way through epoch 1
    resumed = _diffusion_trainer(tmp_path / "part", cfg)
    resumed.run(resume=True)
    assert metric_losses(tmp_path / "full") == metric_losses(tmp_path / "part")  # bitwise-equal floats
    assert state_equal(full.model.state_dict(), resumed.model.state_dict())
    assert state_equal(full.ema.state_dict(), resumed.ema.state_dict())
    a, b = full.optimizers["optimizer"].state_dict()["state"], resumed.optimizers["optimizer"].state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)


def test_resume_with_larger_max_steps_equals_one_run(tmp_path):
    full = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=20), tmp_path / "a", config={})
    full.run()
    loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=10), tmp_path / "b", config={}).run()
    more = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=20), tmp_path / "b", config={})
    more.run(resume=True)
    assert state_equal(full.model.state_dict(), more.model.state_dict())
    assert metric_losses(tmp_path / "a") == metric_losses(tmp_path / "b")
    assert [p.name for p in ck.list_checkpoints(tmp_path / "b")] == ["step_0000010", "step_0000015", "step_0000020"]


def test_resume_refuses_a_changed_model_config_naming_keys(tmp_path):
    cfg = tiny_config(train={"max_steps": 2, "checkpoint_every": 2})
    _diffusion_trainer(tmp_path, cfg).run()
    changed = tiny_config(unet={"model_channels": 16}, diffusion={"schedule": "cosine"}, train={"max_steps": 4})
    with pytest.raises(TrainingError) as e:
        _diffusion_trainer(tmp_path, changed).run(resume=True)
    msg = str(e.value)
    assert "unet.model_channels: 8 -> 16" in msg and 'diffusion.schedule: "linear" -> "cosine"' in msg


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=5), tmp_path, config={}).run()
    with pytest.raises(TrainingError, match="already holds checkpoint step_0000005; pass --resume"):
        loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=5), tmp_path, config={}).run()
    with pytest.raises(TrainingError, match="--resume: no complete checkpoint"):
        loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(), tmp_path / "new", config={}).run(resume=True)


def _nan_at(bad_index: int):
    def loss_fn(model, batch):
        loss, logs = noisy_loss(model, batch)
        if bool((batch.indices == bad_index).any()):
            loss = loss * float("nan")
        return loss, logs
    return loss_fn


def _inf_grad(model, batch):
    loss, logs = noisy_loss(model, batch)
    if bool((batch.indices == 7).any()):
        w = next(model.parameters())
        loss = loss + (torch.sqrt(w - w) * 0.0).sum()  # finite loss, d sqrt(x)/dx at 0 is inf -> NaN grads
    return loss, logs


@pytest.mark.parametrize("loss_fn, what", [(_nan_at(7), "loss"), (_inf_grad, "gradient")])
def test_nan_guard_stops_before_the_optimizer_step(tmp_path, loss_fn, what):
    cfg = train_cfg(max_steps=30, checkpoint_every=2)
    order = DataOrder(40, 8, cfg.seed)
    bad_step = next(s for s in range(30) if 7 in order.indices(s).tolist())  # 0-based step with index 7
    seen = {}

    def spy(model, batch):  # the weights right before the bad step's forward pass
        if 7 in batch.indices.tolist():
            seen["before"] = {k: v.clone() for k, v in model.state_dict().items()}
        return loss_fn(model, batch)

    trainer = loss_trainer(toy_model(), spy, toy_data(), cfg, tmp_path, config={"a": 1})
    with pytest.raises(NonFiniteError) as e:
        trainer.run()
    msg = str(e.value)
    assert f"non-finite {what} at step {bad_step + 1}" in msg and "7" in msg.split("indices")[1]
    assert state_equal(seen["before"], trainer.model.state_dict())  # weights untouched
    latest = ck.latest_checkpoint(tmp_path)
    assert latest is not None and int(latest.name.split("_")[1]) == bad_step - bad_step % 2
    assert "intact" in msg and str(latest) in msg
    ck.load_training_state(latest)  # loads fine


def test_lr_schedule_warmup_constant_cosine():
    c = train_cfg(lr=1.0, warmup_steps=4, max_steps=14, lr_schedule="constant")
    assert [lr_at(s, c) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    c = train_cfg(lr=1.0, warmup_steps=4, max_steps=14, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(3, c) == 1.0 and math.isclose(lr_at(9, c), 0.55) and math.isclose(lr_at(14, c), 0.1)


def test_lr_schedule_cosine_deadline_follows_time_or_steps_whichever_is_further():
    c = train_cfg(lr=1.0, warmup_steps=4, max_steps=14, lr_schedule="cosine_deadline", min_lr_ratio=0.1)
    assert lr_at(2, c, time_progress=0.9) == 0.75  # warm-up is by steps
    assert math.isclose(lr_at(4, c, time_progress=0.5), 0.55)  # half the budget spent: half-way down
    assert math.isclose(lr_at(9, c, time_progress=0.2), 0.55)  # half the steps done: the same
    assert math.isclose(lr_at(4, c, time_progress=1.3), 0.1)  # past the deadline: the floor
    assert math.isclose(lr_at(4, c), 1.0)  # no clock: the step cosine
    cos = train_cfg(lr=1.0, warmup_steps=4, max_steps=14, lr_schedule="cosine", min_lr_ratio=0.1)
    assert lr_at(5, cos, time_progress=0.9) == lr_at(5, cos)  # the other schedules ignore the clock


def test_cosine_deadline_anneals_by_the_wall_clock_and_a_resume_goes_on_down(tmp_path, monkeypatch):
    import types

    from ldmkit.training import loop

    ticks = iter(range(10**7))  # a fake clock: 1 s per reading (the loop's only clocks), so the run is exact
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(monotonic=lambda: float(next(ticks)),
                                                              perf_counter=lambda: float(next(ticks))))

    def lrs(d):
        return [json.loads(line)["lr"] for line in (d / "metrics.jsonl").read_text().splitlines()]

    def run(out, resume=False, **kw):
        cfg = train_cfg(max_steps=10**5, max_minutes=1.0, warmup_steps=0, lr=1.0, checkpoint_every=10**4, **kw)
        return loss_trainer(toy_model(), noisy_loss, toy_data(), cfg, out, config={}, progress=False).run(resume)

    assert run(tmp_path / "a", lr_schedule="cosine_deadline").stopped_by == "max_minutes"
    got = lrs(tmp_path / "a")
    assert got[0] == 1.0 and all(b <= a for a, b in itertools.pairwise(got)) and got[-1] < 0.01  # peak to floor
    mid = math.acos(2 * got[len(got) // 2] - 1) / math.pi  # the wall-clock fraction that lr stands for
    assert 0.4 < mid < 0.6
    # resuming with another minute: the budget is now the time trained so far plus that minute, so the
    # rate starts part-way down (not at the peak again) and anneals to the floor by the new deadline
    n = len(got)
    assert run(tmp_path / "a", resume=True, lr_schedule="cosine_deadline").stopped_by == "max_minutes"
    more = lrs(tmp_path / "a")[n:]
    assert 0.05 < more[0] < 0.95 and more[-1] < 0.01 and all(b <= a for a, b in itertools.pairwise(more))
    assert run(tmp_path / "b").stopped_by == "max_minutes" and set(lrs(tmp_path / "b")) == {1.0}  # constant


def test_ema_follows_the_formula():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.9, warmup=True)
    expected = 0.0
    for step in range(1, 6):
        with torch.no_grad():
            m.weight.fill_(float(step))
        d = ema.update(m, step)
        assert d == ema_decay_at(step, 0.9, True) == min(0.9, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * step
        assert torch.allclose(ema.module.weight, torch.full((1, 2), expected))


def test_data_order_is_a_seeded_permutation_sharded_by_rank():
    single = DataOrder(20, 8, seed=5)
    ranks = [DataOrder(20, 8, seed=5, rank=r, world_size=2) for r in range(2)]
    for k in range(5):
        assert torch.equal(torch.cat([o.indices(k) for o in ranks]), single.indices(k))
    epoch0 = torch.cat([single.indices(k) for k in range(2)])
    assert len(set(epoch0.tolist())) == 16  # no repeats inside an epoch
    assert not torch.equal(single.permutation(0), single.permutation(1))
    assert torch.equal(DataOrder(20, 8, seed=5).indices(3), single.indices(3))


def test_metrics_curve_and_samples_are_written(tmp_path):
    cfg = train_cfg(max_steps=4, sample_every=2)
    calls = []

    def sample_fn(ema_model, step):
        calls.append(step)
        return torch.zeros(1, 8, 8)  # a float [C, H, W] image in [-1, 1]

    loss_trainer(toy_model(), noisy_loss, toy_data(), cfg, tmp_path, config={}, sample_fn=sample_fn).run()
    assert calls == [2, 4] and (tmp_path / "samples" / "step_0000004.png").is_file()
    assert (tmp_path / "loss.png").is_file() and [s for s, _ in metric_losses(tmp_path)] == [1, 2, 3, 4]


def test_batch_split_is_checked(tmp_path):
    with pytest.raises(TrainingError, match="batch_size=8 must be divisible by train.grad_accum"):
        from ldmkit.training.distributed import DistInfo

        loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(batch_size=8, grad_accum=4), tmp_path, config={},
                dist=DistInfo(world_size=4))


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    from _training_helpers import plain_loss

    one = loss_trainer(toy_model(), plain_loss, toy_data(), train_cfg(max_steps=4), tmp_path / "a", config={}, progress=False)
    one.run()
    acc = loss_trainer(toy_model(), plain_loss, toy_data(), train_cfg(max_steps=4, grad_accum=4), tmp_path / "b", config={},
                  progress=False)
    acc.run()
    for k, v in one.model.state_dict().items():
        assert torch.allclose(v, acc.model.state_dict()[k], atol=1e-6)
    assert [round(x, 5) for _, x in metric_losses(tmp_path / "a")] == [round(x, 5) for _, x in metric_losses(tmp_path / "b")]


def test_bf16_autocasts_the_forward_and_keeps_fp32_weights(tmp_path):
    """bf16: the Linear layers compute in bfloat16 (seen by a hook), the weights and their optimizer state stay
    float32, and the losses agree with an fp32 run to bf16 precision without being identical."""
    runs = {}
    for bf16 in (False, True):
        model = toy_model()
        dtypes = []
        model[1].register_forward_hook(lambda m, i, o, seen=dtypes: seen.append(o.dtype))
        t = loss_trainer(model, plain_loss, toy_data(), train_cfg(max_steps=3, bf16=bf16), tmp_path / str(bf16),
                         config={}, progress=False)
        runs[bf16] = [loss for _, loss in t.run().losses]
        assert set(dtypes) == {torch.bfloat16 if bf16 else torch.float32}
        assert all(p.dtype == torch.float32 for p in t.model.parameters())
        exp_avg = t.optimizers["optimizer"].state_dict()["state"][0]["exp_avg"]
        assert exp_avg.dtype == torch.float32
    for a, b in zip(runs[False], runs[True]):
        assert a != b and abs(a - b) <= 3e-2 * abs(a), (a, b)


def test_time_budget_stops_with_a_checkpoint(tmp_path):
    result = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=1000, max_minutes=1e-6), tmp_path,
                     config={}, progress=False).run()
    assert result.step == 1 and result.checkpoint == tmp_path / "checkpoints" / "step_0000001"


def test_time_budget_stop_logs_the_callers_resume_hint(tmp_path, caplog):
    """The default advice is ``--resume``; a caller that continues runs its own way (train-ldm) passes its own."""
    import logging

    with caplog.at_level(logging.WARNING, logger="ldmkit.training.loop"):
        loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=1000, max_minutes=1e-6),
                     tmp_path / "a", config={}, progress=False).run()
        loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=1000, max_minutes=1e-6),
                     tmp_path / "b", config={}, progress=False, resume_hint="rerun train-ldm").run()
    stops = [r.getMessage() for r in caplog.records if "stopped by max_minutes" in r.getMessage()]
    assert len(stops) == 2
    assert stops[0].endswith("to continue: the same command plus --resume")
    assert stops[1].endswith("to continue: rerun train-ldm") and "--resume" not in stops[1]


def test_resume_auto_starts_or_continues(tmp_path):
    """resume="auto" (``--resume-if-any``, for elastic restarts): an empty folder starts, a folder with a checkpoint
    continues, and the result equals one uninterrupted run (loop.py _prepare's "auto" branch)."""
    first = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=5), tmp_path / "a", config={},
                         progress=False).run(resume="auto")
    assert first.step == 5
    more = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=10), tmp_path / "a", config={},
                        progress=False)
    assert more.run(resume="auto").step == 10
    full = loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=10), tmp_path / "b", config={},
                        progress=False)
    full.run()
    assert state_equal(full.model.state_dict(), more.model.state_dict())

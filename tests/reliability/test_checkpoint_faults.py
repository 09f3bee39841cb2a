"""Damaged checkpoints give one named error and never a partial load; NaN/Inf weights are neither written nor
loaded for sampling; a full disk during a save leaves the previous checkpoint intact and says so.

Each test names the library line it guards (in ``ldmkit/training/checkpoint.py`` unless said otherwise).
"""

from __future__ import annotations

import copy
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from _reliability_helpers import (
    ae_checkpoint,
    diffusion_checkpoint,
    loss_trainer,
    noisy_loss,
    rewrite_tensors,
    state_equal,
    toy_data,
    toy_model,
    train_cfg,
)

from ldmkit import pipelines
from ldmkit.autoencoders.checkpoint import load_autoencoder
from ldmkit.cli import main
from ldmkit.training import checkpoint as ck


# ------------------------------------------------------------------------------------------ damage
def _flip_bytes(path: Path, where: str) -> None:
    """Overwrite 16 bytes in the middle of the JSON header or of the tensor data with other bytes."""
    raw = bytearray(path.read_bytes())
    header_end = 8 + int.from_bytes(raw[:8], "little")
    mid = 8 + (header_end - 8) // 2 if where == "header" else header_end + (len(raw) - header_end) // 2
    raw[mid:mid + 16] = bytes((b + 97) % 256 for b in raw[mid:mid + 16])
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


DAMAGE = {  # name -> (damage(ckpt folder), message the error must contain)
    "truncated model": (lambda c: _truncate(c / "model.safetensors"),
                        r"model\.safetensors: truncated: the tensors end at byte"),
    "zero-byte model": (lambda c: (c / "model.safetensors").write_bytes(b""), r"model\.safetensors: empty file"),
    "corrupt model header": (lambda c: _flip_bytes(c / "model.safetensors", "header"),
                             r"model\.safetensors: corrupt header"),
    "replaced model": (lambda c: ck.write_tensors(c / "model.safetensors", {"x": torch.zeros(3)}),
                       r"model\.safetensors: \d+ bytes, but config\.json records \d+"),
    "corrupt model data": (lambda c: _flip_bytes(c / "model.safetensors", "data"),
                           r"model\.safetensors: corrupt content"),
    "corrupt optimizer data": (lambda c: _flip_bytes(c / "optimizer.safetensors", "data"),
                               r"optimizer\.safetensors: corrupt content"),
    "missing optimizer": (lambda c: (c / "optimizer.safetensors").unlink(), r"optimizer\.safetensors: file missing"),
    "missing ema": (lambda c: (c / "ema.safetensors").unlink(), r"ema\.safetensors: file missing"),
    "missing rng": (lambda c: (c / "rng.safetensors").unlink(), r"rng\.safetensors: file missing"),
    "missing state.json": (lambda c: (c / "state.json").unlink(), r"state\.json: file missing"),
    "no optimizer entry": (lambda c: _edit_json(c / "state.json", lambda s: s["optimizers"].clear()),
                           r"state\.json: no state for optimizer 'optimizer'"),
    "no data position": (lambda c: _edit_json(c / "state.json", lambda s: s["train"].pop("consumed_batches")),
                         r"state\.json: missing train\.consumed_batches"),
    "no micro-batch size": (lambda c: _edit_json(c / "state.json", lambda s: s["train"].pop("global_micro_batch")),
                            r"state\.json: missing train\.global_micro_batch"),
    "no elapsed time": (lambda c: _edit_json(c / "state.json", lambda s: s["train"].pop("elapsed_s")),
                        r"state\.json: missing train\.elapsed_s"),
    "no rng entry": (lambda c: _edit_json(c / "state.json", lambda s: s.pop("rng")), r"state\.json: missing key 'rng'"),
    "newer format": (lambda c: _edit_json(c / "config.json", lambda m: m.update(format_version=ck.FORMAT_VERSION + 1)),
                     r"config\.json: format_version 2 is not supported: it is newer"),
    "newer state format": (lambda c: _edit_json(c / "state.json",
                                                lambda s: s.update(format_version=ck.FORMAT_VERSION + 1)),
                           (r"state\.json: format_version 2 is not supported: it is newer than the version this "
                            r"ldmkit reads \(1\); upgrade ldmkit")),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A toy run with one complete checkpoint at step 4 (model, EMA, AdamW, RNG, data position)."""
    out = tmp_path_factory.mktemp("faults") / "run"
    loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=4, checkpoint_every=4), out, config={},
                 progress=False).run()
    return out


def _copy_run(good_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(good_run, out)
    return out, ck.latest_checkpoint(out)


def _fresh_trainer(out: Path):
    return loss_trainer(toy_model(), noisy_loss, toy_data(), train_cfg(max_steps=6, checkpoint_every=4), out,
                        config={}, progress=False)


def _assert_untouched(trainer, before: dict) -> None:
    """Nothing the resume would have loaded changed: modules, EMA, optimizer state, step, data position."""
    assert state_equal(trainer.model.state_dict(), before["model"])
    assert state_equal(trainer.ema.state_dict(), before["ema"])
    assert trainer.optimizers["optimizer"].state_dict()["state"] == {}
    assert (trainer.step, trainer.consumed) == (0, 0)


def _state_of(trainer) -> dict:
    return {"model": copy.deepcopy(trainer.model.state_dict()), "ema": copy.deepcopy(trainer.ema.state_dict())}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_checkpoint_refuses_resume_naming_file_and_loads_nothing(good_run, tmp_path, case):
    """Guards ``verify_file`` (size + sha256 against ``config.json["files"]``), ``_check_version``, the key
    checks of ``load_training_state``, and ``Trainer._check_complete`` in ``ldmkit/training/loop.py``
    (a missing EMA / optimizer entry / data position used to fall back silently to a default)."""
    out, ckpt = _copy_run(good_run, tmp_path)
    damage, message = DAMAGE[case]
    damage(ckpt)
    trainer = _fresh_trainer(out)
    before = _state_of(trainer)
    with pytest.raises(ck.CheckpointError, match=message):
        trainer.run(resume=True)
    _assert_untouched(trainer, before)


def test_a_piece_that_does_not_fit_rolls_back_every_earlier_piece(good_run, tmp_path):
    """Guards the snapshot/rollback in ``Trainer._load`` (``ldmkit/training/loop.py``): torch's
    ``load_state_dict`` copies every fitting tensor before raising on a misfit, and the EMA / optimizer were
    applied before a bad later piece; the resume must apply all or nothing."""
    out, ckpt = _copy_run(good_run, tmp_path)
    ema = ck.read_tensors(ckpt / "ema.safetensors")
    ema["3.weight"] = torch.zeros(3, 3)  # the last tensor of the last piece applied to a module has the wrong shape
    rewrite_tensors(ckpt, "ema.safetensors", ema)
    trainer = _fresh_trainer(out)
    before = _state_of(trainer)
    with pytest.raises(ck.CheckpointError, match=r"cannot resume from .*step_0000004.*nothing was loaded"):
        trainer.run(resume=True)
    _assert_untouched(trainer, before)


@pytest.mark.parametrize("where", ["header", "data"])
def test_read_tensors_names_layout_damage_without_a_record(tmp_path, where):
    """Guards ``_safetensors_problem`` (checkpoints written before files were recorded, and files outside
    checkpoints): truncation, an empty file and a corrupt header each get their own message."""
    path = tmp_path / "t.safetensors"
    ck.write_tensors(path, {"a": torch.arange(64.0), "b": torch.ones(8, 8)})
    full = path.read_bytes()
    path.write_bytes(full[:-10])
    with pytest.raises(ck.CheckpointError, match=r"t\.safetensors: truncated: the tensors end at byte"):
        ck.read_tensors(path)
    path.write_bytes(full[:20])
    with pytest.raises(ck.CheckpointError, match=r"truncated: the header says \d+ bytes"):
        ck.read_tensors(path)
    path.write_bytes(b"")
    with pytest.raises(ck.CheckpointError, match=r"empty file \(0 bytes\)"):
        ck.read_tensors(path)
    if where == "header":
        path.write_bytes(full)
        raw = bytearray(full)
        raw[12:20] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
        path.write_bytes(bytes(raw))
        with pytest.raises(ck.CheckpointError, match=r"t\.safetensors: corrupt header"):
            ck.read_tensors(path)


# ------------------------------------------------------------------------------- loading for sampling
SAMPLE_DAMAGE = ["truncated model", "zero-byte model", "corrupt model header", "corrupt model data", "replaced model",
                 "newer format"]


@pytest.mark.parametrize("case", SAMPLE_DAMAGE)
def test_damaged_checkpoint_refused_by_load_model_and_sample(tmp_path, capsys, case):
    """Guards ``read_checkpoint_tensors`` in ``pipelines.load_model`` (sha256/size check) and
    ``_check_version``: ``ldmkit sample`` exits 1 with the file named, never samples from wrong numbers."""
    ckpt = diffusion_checkpoint(tmp_path)
    damage, message = DAMAGE[case]
    damage(ckpt)
    with pytest.raises(ck.CheckpointError, match=message):
        pipelines.load_model(ckpt)
    assert main(["sample", str(ckpt), "-n", "1", "--steps", "2", "--device", "cpu",
                 "--npz", str(tmp_path / "s.npz")]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and ("model.safetensors" in err or "config.json" in err)
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_refused_for_sampling(tmp_path, capsys, bad):
    """Guards ``require_finite`` via ``read_checkpoint_tensors(..., finite=True)`` in ``pipelines.load_model``
    and ``autoencoders.checkpoint.load_autoencoder``: the error names the file and the tensor."""
    ckpt = diffusion_checkpoint(tmp_path)
    weights = ck.read_tensors(ckpt / "model.safetensors")
    name = sorted(weights)[3]
    weights[name].view(-1)[0] = bad
    rewrite_tensors(ckpt, "model.safetensors", weights)  # consistent record: only the values are wrong
    with pytest.raises(ck.NonFiniteWeightsError, match=rf"model\.safetensors: non-finite weights in tensor {name}"):
        pipelines.load_model(ckpt)
    assert main(["sample", str(ckpt), "-n", "1", "--steps", "2", "--device", "cpu",
                 "--npz", str(tmp_path / "s.npz")]) == 1
    assert name in capsys.readouterr().err

    ae = ae_checkpoint(tmp_path)
    weights = ck.read_tensors(ae / "model.safetensors")
    name = min(weights)
    weights[name].view(-1)[-1] = bad
    rewrite_tensors(ae, "model.safetensors", weights)
    with pytest.raises(ck.NonFiniteWeightsError, match=rf"model\.safetensors: non-finite weights in tensor {name}"):
        load_autoencoder(ae)
    assert main(["ae-stats", str(ae), "--num-images", "2"]) == 1
    assert name in capsys.readouterr().err


# ------------------------------------------------------------------------------------ never written
def test_training_never_writes_non_finite_weights(tmp_path):
    """Guards the ``non_finite`` check at the top of ``save_checkpoint`` (used by ``Trainer._save``): a buffer
    that went Inf (the loss and gradients stay finite, so the NaN guard cannot see it) is refused at the
    next save with the group and tensor named; the previous checkpoint stays the latest and loads."""
    model = toy_model()
    model.register_buffer("running_scale", torch.ones(3))
    calls = {"n": 0}

    def loss_fn(net, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            model.running_scale[1] = float("inf")
        return noisy_loss(net, batch)

    out = tmp_path / "run"
    trainer = loss_trainer(model, loss_fn, toy_data(), train_cfg(max_steps=6, checkpoint_every=2), out,
                           config={}, progress=False)
    with pytest.raises(ck.NonFiniteWeightsError,
                       match=r"refusing to save step_0000004: non-finite weights in model: running_scale .*"
                             r"previous checkpoint .*step_0000002 is intact"):
        trainer.run()
    assert [p.name for p in ck.list_checkpoints(out)] == ["step_0000002"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert ck.load_training_state(ck.latest_checkpoint(out))["step"] == 2


# ---------------------------------------------------------------------------------------- full disk
def test_full_disk_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """Guards the ``try``/``except`` around ``_write_folder`` in ``save_checkpoint``: the 3rd file of the
    second checkpoint fails with ENOSPC; the temporary folder is removed, no ``step_*`` folder is half
    written, and the error names the previous checkpoint as intact."""
    out = tmp_path / "run"
    cfg = train_cfg(max_steps=4, checkpoint_every=2)
    trainer = loss_trainer(toy_model(), noisy_loss, toy_data(), cfg, out, config={}, progress=False)
    real_write, writes = ck.write_tensors, {"n": 0}

    def failing_write(path, tensors):
        if ck.list_checkpoints(out):  # the first checkpoint is written normally
            writes["n"] += 1
            if writes["n"] == 3:
                Path(path).write_bytes(b"\0" * 10)  # a partial file, as a full disk leaves one
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, tensors)

    monkeypatch.setattr(ck, "write_tensors", failing_write)
    with pytest.raises(ck.CheckpointWriteError,
                       match=r"cannot write checkpoint .*step_0000004 \(the disk is full: .*\); nothing was saved "
                             r"and the previous checkpoint .*step_0000002 is intact"):
        trainer.run()
    assert writes["n"] == 3
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002"]
    state = ck.load_training_state(ck.latest_checkpoint(out))
    assert state["step"] == 2
    from ldmkit.commands._common import exit_code

    assert exit_code(ck.CheckpointWriteError("x")) == 1


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """The first byte of a safetensors file is its header length's low byte; 0x80 there is common (the KL-f4
    autoencoders' weights start ``80 35``). Guards ``training/files.py`` ``_safetensors_problem``, which once
    refused such files as pickles before looking for the JSON header."""
    from safetensors.torch import save_file

    from ldmkit.training.files import read_tensors

    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    for pad in range(300):
        path = tmp_path / "w.safetensors"
        save_file(tensors, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no metadata length gave a header length whose low byte is 0x80")
    assert torch.equal(read_tensors(path)["w"], tensors["w"])

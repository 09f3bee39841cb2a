"""Checkpoints: safetensors + JSON round trip, no pickle, atomic folders, keep-last-N."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from ldmkit.training import checkpoint as ck


def _opt_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_optimizer_state_round_trips_exactly(tmp_path):
    model, opt = _opt_state()
    tensors, meta = ck.optimizer_to_tensors(opt.state_dict())
    ck.write_tensors(tmp_path / "o.safetensors", tensors)
    ck.write_json(tmp_path / "o.json", meta)
    back = ck.optimizer_from_tensors(ck.read_tensors(tmp_path / "o.safetensors"), ck.read_json(tmp_path / "o.json"))
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.5)
    opt2.load_state_dict(back)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid in a["state"]:
        for k in a["state"][pid]:
            assert torch.equal(a["state"][pid][k], b["state"][pid][k])


def test_rng_states_round_trip():
    import random

    tensors, meta = ck.capture_rng()
    meta = json.loads(json.dumps(meta))
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(5), random.seed(9)
    ck.restore_rng(tensors, meta)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


def _save(run, step, keep_last=2):
    return ck.save_checkpoint(run, step, config={"unet": {"c": 1}},
                              tensors={"model": {"w": torch.full((2,), float(step))}, "ema": {"w": torch.zeros(2)}},
                              train_state={"consumed_batches": step},
                              keep_last=keep_last)


def test_keep_last_n_and_resolution(tmp_path):
    for step in range(1, 6):
        _save(tmp_path, step, keep_last=2)
    names = [p.name for p in ck.list_checkpoints(tmp_path)]
    assert names == ["step_0000004", "step_0000005"]
    assert ck.resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_0000005"
    state = ck.load_training_state(ck.resolve_checkpoint(tmp_path))
    assert state["step"] == 5 and torch.equal(state["model"]["w"], torch.full((2,), 5.0))
    assert ck.load_checkpoint_config(tmp_path)["config"] == {"unet": {"c": 1}}
    _save(tmp_path, 6, keep_last=1)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_0000006"]
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        _save(tmp_path, 7, keep_last=0)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_0000006"]


def test_debris_is_ignored_then_cleaned(tmp_path):
    _save(tmp_path, 1)
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_0000002-999").mkdir()
    (root / ".tmp-step_0000002-999" / "model.safetensors").write_bytes(b"partial")
    (root / ".del-step_0000000-999").mkdir()
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["step_0000001"]
    _save(tmp_path, 2)
    assert sorted(p.name for p in root.iterdir()) == ["step_0000001", "step_0000002"]


def test_pickle_is_refused(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pt")  # a zip+pickle file, as torch writes it
    with pytest.raises(ck.CheckpointError, match="pickle checkpoints are not loaded"):
        ck.resolve_checkpoint(tmp_path / "model.pt")
    with pytest.raises(ck.CheckpointError, match=r"found \['model.pt'\]: pickle checkpoints are not loaded"):
        ck.resolve_checkpoint(tmp_path)
    os.replace(tmp_path / "model.pt", tmp_path / "model.safetensors")
    with pytest.raises(ck.CheckpointError, match="a pickle/zip file; only safetensors are loaded"):
        ck.read_tensors(tmp_path / "model.safetensors")


def test_format_version_is_checked(tmp_path):
    ckpt = _save(tmp_path, 1)
    meta = json.loads((ckpt / "config.json").read_text())
    meta["format_version"] = 99
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ck.CheckpointError, match="format_version 99 is not supported"):
        ck.load_checkpoint_config(ckpt)


def test_config_differences_names_keys():
    old = {"unet": {"channels": 32, "mult": [1, 2]}, "train": {"lr": 1}, "data": {"pad_to": None, "split": "a"}}
    new = {"unet": {"channels": 64, "mult": [1, 2]}, "train": {"lr": 2}, "data": {"pad_to": 32, "split": "b"}}
    assert ck.config_differences(old, new, ("unet", "data.pad_to")) == \
        ["data.pad_to: null -> 32", "unet.channels: 32 -> 64"]
    assert len(ck.config_differences(old, new)) == 4

"""The one verified-weights loader (ldmkit.weights), used by the perceptual loss and the metrics' extractors."""

import hashlib
import io
import pickle

import pytest
import torch
from safetensors.torch import save_file

from ldmkit.weights import load_verified_safetensors, sha256_file


def _good(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16)}, str(path))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_file_equals_hashlib_over_several_chunks(tmp_path):
    path = tmp_path / "big.bin"
    data = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MiB: more than one 1 MiB chunk, not a multiple of it
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_good_file_loads_with_its_hash_in_any_case(tmp_path):
    path, digest = _good(tmp_path)
    tensors, actual = load_verified_safetensors(path, digest.upper(), "test weights")
    assert actual == digest
    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3)) and tensors["b"].dtype == torch.float16


def test_wrong_hash_names_file_expected_and_actual(tmp_path):
    path, digest = _good(tmp_path)
    with pytest.raises(ValueError) as e:
        load_verified_safetensors(path, "0" * 64, "test weights", howto="HOW TO FIX")
    msg = str(e.value)
    assert str(path) in msg and "0" * 64 in msg and digest in msg and "test weights" in msg and "HOW TO FIX" in msg


def test_missing_hash_is_refused_showing_the_digest_unless_allowed(tmp_path, caplog):
    path, digest = _good(tmp_path)
    with pytest.raises(ValueError, match=digest):
        load_verified_safetensors(path, None, "test weights")
    with caplog.at_level("WARNING"):
        tensors, actual = load_verified_safetensors(path, None, "test weights", allow_unverified=True)
    assert actual == digest and "not verified" in caplog.text and set(tensors) == {"a", "b"}


@pytest.mark.parametrize("kind", ["torch_zip", "raw_pickle"])
def test_pickle_files_are_refused_unread_whatever_their_suffix(tmp_path, kind, monkeypatch):
    path = tmp_path / "sneaky.safetensors"
    if kind == "torch_zip":
        torch.save({"a": torch.zeros(2)}, path)
    else:
        buf = io.BytesIO()
        pickle.dump({"a": [0.0, 1.0]}, buf, protocol=4)
        path.write_bytes(buf.getvalue())
    import pickle as pickle_module

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the loader must not unpickle")

    monkeypatch.setattr(pickle_module, "load", no_unpickling)
    monkeypatch.setattr(pickle_module, "loads", no_unpickling)
    with pytest.raises(ValueError, match="never loads pickle"):
        load_verified_safetensors(path, sha256_file(path), "test weights")


def test_pickle_suffix_and_non_safetensors_bytes_are_refused(tmp_path):
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"anything")
    with pytest.raises(ValueError, match="never loads pickle"):
        load_verified_safetensors(pth, sha256_file(pth), "test weights")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_verified_safetensors(junk, sha256_file(junk), "test weights")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)nope.safetensors not found.*get it here"):
        load_verified_safetensors(tmp_path / "nope.safetensors", "0" * 64, "test weights", howto="get it here")

"""Plumbing of the FID Inception-v3 with random weights: architecture, shapes, preprocessing, weight loading."""

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from ldmkit.metrics.features import InceptionExtractor, load_inception_extractor
from ldmkit.metrics.inception import FIDInceptionV3


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_architecture_matches_the_fid_graph(net):
    # pytorch-fid's FID Inception (torchvision Inception3 without aux head, 1008-way fc) has 23,850,960 params.
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    sd = net.state_dict()
    assert sd["fc.weight"].shape == (1008, 2048)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7_1.conv.weight"].shape == (192, 768, 1, 1)
    assert sd["Mixed_7c.branch3x3dbl_1.conv.weight"].shape == (448, 2048, 1, 1)
    assert net.Mixed_7b.pool == "avg" and net.Mixed_7c.pool == "max"
    assert net.Conv2d_1a_3x3.bn.eps == 0.001


def test_fid_pooling_variants():
    # Average pools exclude padding (TF): a constant map stays constant at the borders.
    from ldmkit.metrics.inception import _avg_pool_no_pad
    x = torch.ones(1, 2, 5, 5)
    assert torch.equal(_avg_pool_no_pad(x), x)


def test_extractor_shapes_and_preprocessing(net):
    ex = InceptionExtractor(net, weights_sha256="random-init")
    images = (torch.rand(2, 28, 28) * 255).to(torch.uint8)
    x, mode = ex.preprocess(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert x.shape == (2, 3, 299, 299) and mode == "gray-to-rgb+bilinear-299"
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    const, _ = ex.preprocess(torch.full((1, 1, 28, 28), 0.25))
    assert torch.allclose(const, torch.full_like(const, 0.25))
    assert ex.preprocess(torch.zeros(1, 3, 299, 299))[1] == "none"
    out = ex.extract(images, batch_size=1)
    assert out.features.shape == (2, 2048) and out.logits.shape == (2, 1008)
    assert out.resize == "gray-to-rgb+bilinear-299"
    # Features are the pooled map fed to the classifier: logits = fc(features).
    fc = net.fc
    expected = torch.tensor(out.features).float() @ fc.weight.T + fc.bias
    assert torch.allclose(torch.tensor(out.logits).float(), expected, atol=1e-3)


def test_weights_file_checks(tmp_path, net, monkeypatch):
    monkeypatch.delenv("LDMKIT_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("LDMKIT_INCEPTION_SHA256", raising=False)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05"):
        load_inception_extractor()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_inception_extractor(tmp_path / "missing.safetensors")
    pth = tmp_path / "weights.pth"
    pth.write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="never loads pickle"):
        load_inception_extractor(pth)
    path = tmp_path / "fid_inception.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="expected 0+"):
        load_inception_extractor(path, sha256="0" * 64)
    ex = load_inception_extractor(path, sha256=sha)
    assert ex.weights_sha256 == sha and ex.describe()["extractor"] == "inception-fid-v3"
    assert torch.equal(ex.model.fc.weight, net.fc.weight)
    monkeypatch.setenv("LDMKIT_INCEPTION_WEIGHTS", str(path))
    monkeypatch.setenv("LDMKIT_INCEPTION_SHA256", sha)
    assert load_inception_extractor().weights_sha256 == sha
    bad = tmp_path / "partial.safetensors"
    save_file({"fc.weight": torch.zeros(1008, 2048)}, str(bad))
    monkeypatch.delenv("LDMKIT_INCEPTION_SHA256")
    with pytest.raises(ValueError, match="missing"):
        load_inception_extractor(bad)

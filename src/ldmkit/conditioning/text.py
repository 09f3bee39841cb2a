"""Text conditioning: captions / prompts -> a token sequence for the U-Net's cross-attention (Rombach et al.
2022, Sec. 3.3), with the padding mask honoured in attention.

Two encoders, ``cond.text.encoder``:

- ``"minilm"``: the frozen pretrained all-MiniLM-L6-v2 (``networks/text_encoder.py``, 384-d). Not part of the
  denoiser: its context is computed here, once per distinct caption (cached), and passed as ``Cond.context``.
- ``"scratch"``: a :class:`~ldmkit.networks.transformer.TokenTransformer` over the same WordPiece vocabulary,
  trained jointly with the U-Net: it is the denoiser's ``context_encoder``, and this kind passes ``Cond.tokens``.

The empty prompt is the unconditional branch: it encodes to an all-False mask (no token), exactly what
``null_condition`` and condition dropout give, so guidance and dropout agree with ``--prompt ""``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ldmkit.types import Batch, Cond

MINILM_WIDTH = 384


@dataclass
class TextConfig:
    """The text encoder (``cond.context: text``).

    Attributes:
        encoder: ``"minilm"`` (frozen pretrained, 384-d context) or ``"scratch"`` (trained jointly).
        max_tokens: longest token sequence, ``[CLS]`` and ``[SEP]`` included (prompts longer are refused,
            training captions cut); batches are padded to their longest caption, not to this.
        width: scratch: token width (= ``unet.context_dim``); minilm: must stay 384.
        depth: scratch: transformer blocks.
        heads: scratch: attention heads.
        pooled: minilm: put the sentence embedding first in the context (the mean of MiniLM's token states over
            the prompt: the vector all-MiniLM-L6-v2 is trained to make similar for paraphrases), then the
            token states; the U-Net reads both by cross-attention. The empty prompt still has no token.
    """

    encoder: Literal["minilm", "scratch"] = "minilm"
    max_tokens: int = 32
    width: int = MINILM_WIDTH
    depth: int = 2
    heads: int = 4
    pooled: bool = False

    def __post_init__(self):
        bad = []
        if self.pooled and self.encoder != "minilm":
            bad.append(f"pooled=true is for the minilm encoder (encoder={self.encoder!r})")
        if not 3 <= self.max_tokens <= 512:
            bad.append(f"max_tokens={self.max_tokens} must be in [3, 512]")
        if self.encoder == "minilm" and self.width != MINILM_WIDTH:
            bad.append(f"width={self.width}: the minilm encoder is {MINILM_WIDTH}-d (width is for scratch)")
        if self.depth < 1 or self.heads < 1 or self.width % self.heads:
            bad.append(f"depth={self.depth}, heads={self.heads}, width={self.width}: need depth >= 1 and width "
                       "divisible by heads")
        if bad:
            from ldmkit.registry import ConfigError

            raise ConfigError("cond.text: " + "; ".join(bad))


class TextKind:
    """The text context kind: ``from_batch`` reads ``Batch.captions``, ``from_request`` takes ``prompts``.

    With ``class_names`` (one default prompt per class, as Fashion-MNIST's "a photo of a sneaker", and no
    class-label embedding in the U-Net) it also takes ``labels``: class names or indices become that class's
    default prompt, so a text model answers ``--class sneaker`` too.
    """

    def __init__(self, cfg: TextConfig, prompts: list[str] | None = None,
                 class_names: tuple[str, ...] | None = None):
        from ldmkit.networks.text_encoder import WordPieceTokenizer

        self.cfg = cfg
        self.tokenizer = WordPieceTokenizer(max_tokens=cfg.max_tokens)
        self.default_prompts = prompts or [""]
        fits = class_names is not None and prompts is not None and len(prompts) == len(class_names)
        self.class_names = tuple(class_names) if fits else None
        self.accepts = ("prompts", "labels") if fits else ("prompts",)
        self.frozen = None
        self.context_encoder = None
        self._cache: dict[tuple[str, str], torch.Tensor] = {}
        if cfg.encoder == "minilm":
            self.context_dim = MINILM_WIDTH
        else:
            from ldmkit.networks.transformer import TokenTransformer

            self.context_dim = cfg.width
            self.context_encoder = TokenTransformer(self.tokenizer.vocab_size, cfg.width, cfg.depth, cfg.heads,
                                                    cfg.max_tokens)

    def _tokens(self, texts: list[str], truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self.tokenizer.encode([t if t.strip() else "" for t in texts], truncate=truncate)
        empty = torch.tensor([not t.strip() for t in texts], dtype=torch.bool)
        tokens[empty], mask[empty] = 0, False  # the empty prompt: no token at all (= the null condition)
        return tokens, mask

    def encode(self, texts: list[str], device: torch.device | str = "cpu", truncate: bool = True) -> Cond:
        """``Cond(tokens, token_mask)`` (scratch) or ``Cond(context, context_mask)`` (minilm) of ``texts``."""
        if self.frozen is None and self.cfg.encoder == "minilm":
            from ldmkit.networks.text_encoder import load_minilm

            self.frozen = load_minilm()
        tokens, mask = self._tokens(texts, truncate)
        if self.cfg.encoder == "scratch":
            return Cond(tokens=tokens.to(device), token_mask=mask.to(device))
        return self._minilm_context(texts, tokens, mask, device)

    @torch.no_grad()
    def _minilm_context(self, texts, tokens, mask, device) -> Cond:
        """Frozen MiniLM token states, computed once per distinct text (cache), padded to the batch."""
        device = torch.device(device)
        if next(self.frozen.parameters()).device != device:
            from ldmkit.networks.text_encoder import load_minilm

            self.frozen = load_minilm(str(device))
        missing = sorted({t for t in texts if (str(device), t) not in self._cache})
        if missing:
            rows = [texts.index(t) for t in missing]
            states, _ = self.frozen(tokens[rows].to(device), mask[rows].to(device))
            for t, r, s in zip(missing, rows, states):
                self._cache[(str(device), t)] = s[: int(mask[r].sum())].clone()
        first = int(self.cfg.pooled)  # position 0 holds the sentence embedding when pooled
        context = torch.zeros(len(texts), first + tokens.shape[1], MINILM_WIDTH, device=device)
        for i, t in enumerate(texts):
            s = self._cache[(str(device), t)]
            context[i, first: first + len(s)] = s
            if first and len(s):
                context[i, 0] = s.mean(dim=0)
        mask = mask.to(device)
        if first:
            mask = torch.cat([mask.any(dim=1, keepdim=True), mask], dim=1)
        return Cond(context=context, context_mask=mask)

    def from_batch(self, batch: Batch, space=None) -> Cond:
        if batch.captions is None:
            raise ValueError("cond.context='text' needs captions in the data; set data.captions: true "
                             "(fashion-mnist) or use data.name: shapes")
        return self.encode(list(batch.captions), batch.images.device, truncate=True)

    def from_request(self, n: int, *, space=None, prompts=None, labels=None) -> Cond:
        if labels is not None:
            from ldmkit.conditioning import parse_classes

            if prompts is not None:
                raise ValueError("labels: give class names or prompts, not both (a class name is the prompt "
                                 f"{self.default_prompts[0]!r} of its class)")
            ks = parse_classes(labels, len(self.class_names), self.class_names)
            prompts = [self.default_prompts[k] for k in ks]
        if prompts is None:
            prompts = self.default_prompts
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        bad = [p for p in prompts if not isinstance(p, str)]
        if bad or not prompts:
            raise ValueError(f"prompts: expected one or more strings, got {bad[:3] or prompts!r}")
        return self.encode([prompts[i % len(prompts)] for i in range(n)], truncate=False)


def build_kind(cfg, prompts: list[str] | None = None, class_names: tuple[str, ...] | None = None) -> TextKind:
    """The text kind of a run config (root ``Config``'s ``cond.text``); ``prompts``: the default request (one
    per class when ``class_names`` is given: then class names are accepted as prompts, see :class:`TextKind`)."""
    return TextKind(cfg.cond.text, prompts, class_names)

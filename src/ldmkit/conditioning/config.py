"""The ``cond:`` section of a run config: which context and concat conditioners the model uses.

Class labels stay ``unet.num_classes`` plus the dataset's labels; ``diffusion.cond_drop_prob`` drops every
kind at once. Each kind's own options live beside its component (``TextConfig`` in ``conditioning/text.py``,
the layout and concat sections in ``conditioning/layout.py`` / ``conditioning/concat.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ldmkit.conditioning.concat import InpaintConfig, SuperResConfig
from ldmkit.conditioning.layout import LayoutConfig
from ldmkit.conditioning.text import TextConfig

ContextName = Literal["none", "text", "layout"]
ConcatName = Literal["none", "super_resolution", "inpainting"]


@dataclass
class CondConfig:
    """What conditions the denoiser besides class labels.

    Attributes:
        context: the cross-attention context (``tau_theta`` of Rombach et al. 2022, Sec. 3.3): ``"none"``,
            ``"text"`` (captions / prompts, see ``text``) or ``"layout"`` (boxes + labels). Needs
            ``unet.context_dim`` equal to the encoder's width.
        concat: channels concatenated to ``x_t``: ``"none"``, ``"super_resolution"`` or ``"inpainting"``.
            Needs ``unet.concat_channels`` equal to what the conditioner produces.
        text: the text encoder's options (``context: text``).
        sr, inpaint: the super-resolution degradation / the inpainting training masks (``concat``).
        layout: the layout tokenizer and transformer (``context: layout``).
    """

    context: ContextName = "none"
    concat: ConcatName = "none"
    text: TextConfig = field(default_factory=TextConfig)
    sr: SuperResConfig = field(default_factory=SuperResConfig)  # concat: super_resolution (conditioning/concat.py)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)  # concat: inpainting
    layout: LayoutConfig = field(default_factory=LayoutConfig)  # context: layout (conditioning/layout.py)

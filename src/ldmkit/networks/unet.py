"""The denoising U-Net of DDPM (Ho et al. 2020) with the additions of Improved DDPM (Nichol & Dhariwal 2021:
scale-and-shift timestep conditioning, doubled output for a learned variance) and Latent Diffusion
(Rombach et al. 2022: spatial transformers with cross-attention to context tokens).

The network knows nothing about diffusion: it maps ``(x, t, conditioning)`` to a tensor with
``out_channels`` (x2 with ``learn_variance``) channels. What those channels mean is decided by
``ldmkit.denoiser.Denoiser``.

Layout (``L = len(channel_mult)`` levels, level ``i`` at ``1/2^i`` of the input size)::

    conv_in -> [ResBlock (+Attention)] x num_res_blocks, Downsample   per level except the last
            -> middle: ResBlock, Attention, ResBlock
            -> [ResBlock on concat(skip) (+Attention)] x (num_res_blocks+1), Upsample   per level, reversed
            -> GroupNorm, SiLU, conv_out (zero-initialised)

"Attention" is plain self-attention, or a spatial transformer (self + cross-attention) when
``context_dim`` is set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ldmkit.networks.attention import SelfAttention2d, SpatialTransformer, resolve_heads
from ldmkit.networks.embeddings import TimestepEmbedding
from ldmkit.registry import lookup


@dataclass
class UNetConfig:
    """Hyperparameters of :class:`UNet`.

    Attributes:
        in_channels: channels of ``x`` (image or latent).
        out_channels: channels predicted per output (``None`` = ``in_channels``).
        model_channels: width of level 0; level ``i`` has ``model_channels * channel_mult[i]``.
        channel_mult: one multiplier per resolution level.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_levels: level indices (0 = full resolution) that get attention after each ResBlock;
            the middle block always has attention. Levels, not pixel sizes, so any input size works.
        dropout: dropout inside residual blocks (and transformer feed-forwards).
        num_heads: attention heads per layer (head width = channels / num_heads); exclusive with head_dim.
        head_dim: width of each head (heads = channels / head_dim); exclusive with num_heads.
        norm_groups: GroupNorm groups; must divide every level's width.
        num_classes: number of classes for class conditioning; index ``num_classes`` is the learned
            null class used by classifier-free guidance. ``None`` = no class input.
        context_dim: width of cross-attention context tokens; when set, attention layers are spatial
            transformers. ``None`` = no context input.
        transformer_depth: transformer blocks per spatial transformer.
        concat_channels: extra channels concatenated to ``x`` (super-resolution, inpainting masks).
        coord_input: append two channels holding each pixel's x and y in [-1, 1] across the canvas to the
            input (CoordConv, Liu et al. 2018): the features know where they are, so cross-attention can
            match layout coordinates to places without learning position from the zero padding alone.
        learn_variance: double the output channels (the second half parameterises the variance).
    """

    in_channels: int = 1
    out_channels: int | None = None
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    dropout: float = 0.0
    num_heads: int | None = 4
    head_dim: int | None = None
    norm_groups: int = 32
    num_classes: int | None = None
    context_dim: int | None = None
    transformer_depth: int = 1
    concat_channels: int = 0
    coord_input: bool = False
    learn_variance: bool = False

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_levels = tuple(int(a) for a in self.attention_levels)
        bad = []
        if self.in_channels <= 0:
            bad.append(f"in_channels={self.in_channels} must be positive")
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            bad.append(f"channel_mult={self.channel_mult} must be non-empty and positive")
        if self.num_res_blocks <= 0:
            bad.append(f"num_res_blocks={self.num_res_blocks} must be positive")
        for level in self.attention_levels:
            if not 0 <= level < len(self.channel_mult):
                bad.append(f"attention_levels has {level}, valid levels are 0..{len(self.channel_mult) - 1}")
        for width in [self.model_channels * m for m in self.channel_mult]:
            if width % self.norm_groups:
                bad.append(f"level width {width} is not divisible by norm_groups={self.norm_groups}")
        if (self.num_heads is None) == (self.head_dim is None):
            bad.append(f"set exactly one of num_heads / head_dim (got {self.num_heads} / {self.head_dim})")
        if self.num_classes is not None and self.num_classes <= 0:
            bad.append(f"num_classes={self.num_classes} must be positive or None")
        if self.concat_channels < 0:
            bad.append(f"concat_channels={self.concat_channels} must be >= 0")
        if not 0.0 <= self.dropout < 1.0:
            bad.append(f"dropout={self.dropout} must be in [0, 1)")
        if bad:
            raise ValueError("UNetConfig: " + "; ".join(bad))

    @property
    def output_channels(self) -> int:
        """Channels of the network output (x2 when the variance is learned)."""
        base = self.in_channels if self.out_channels is None else self.out_channels
        return base * (2 if self.learn_variance else 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_levels"] = list(self.attention_levels)
        return d


# Named sizes. Values are UNetConfig keyword arguments; callers add in_channels, num_classes, context_dim...
UNET_PRESETS: dict[str, dict] = {
    # For unit tests: 0.19M parameters, two levels.
    "tiny": {"model_channels": 16, "channel_mult": (1, 2), "num_res_blocks": 1, "attention_levels": (1,),
             "num_heads": 2, "norm_groups": 8},
    # Sized for a 2-core CPU on Fashion-MNIST 28x28 / 32x32 (1.7M parameters).
    "fmnist_small": {"model_channels": 32, "channel_mult": (1, 2, 2), "num_res_blocks": 2,
                     "attention_levels": (2,), "num_heads": 4, "norm_groups": 16, "dropout": 0.1},
    # Larger Fashion-MNIST model (7.3M parameters) for a real accelerator.
    "fmnist": {"model_channels": 64, "channel_mult": (1, 2, 2), "num_res_blocks": 2,
               "attention_levels": (1, 2), "num_heads": 4, "norm_groups": 32, "dropout": 0.1},
    # Ho et al. 2020 CIFAR-10 layout: 128 channels, attention at 16x16, dropout 0.1 (38.3M parameters here;
    # the paper's 35.7M used additive instead of scale-and-shift timestep conditioning).
    "ddpm_cifar10": {"model_channels": 128, "channel_mult": (1, 2, 2, 2), "num_res_blocks": 2,
                     "attention_levels": (1,), "num_heads": 1, "norm_groups": 32, "dropout": 0.1},
    # Latent diffusion for small latents (e.g. 8x8x4 from a KL-f4 autoencoder on 32x32 images); ~10M
    # parameters with context_dim=32.
    "ldm_small": {"model_channels": 64, "channel_mult": (1, 2, 2), "num_res_blocks": 2,
                  "attention_levels": (1, 2), "head_dim": 32, "num_heads": None, "norm_groups": 32},
}


def unet_config(preset: str, **overrides) -> UNetConfig:
    """A :class:`UNetConfig` from a named preset plus keyword overrides."""
    preset_fields = lookup(UNET_PRESETS, preset, "U-Net preset")
    valid = {f.name for f in fields(UNetConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"unet_config: unknown UNetConfig field(s) {unknown}; valid fields: {sorted(valid)}")
    kwargs = dict(preset_fields)
    if "head_dim" in overrides and "num_heads" not in overrides:
        kwargs["num_heads"] = None
    if "num_heads" in overrides and "head_dim" not in overrides:
        kwargs["head_dim"] = None
    kwargs.update(overrides)
    return UNetConfig(**kwargs)


class ResBlock(nn.Module):
    """Residual block with timestep scale-and-shift (Nichol & Dhariwal 2021, "AdaGN").

    ``h = conv1(SiLU(GN(x)))``; ``h = GN(h) * (1 + scale) + shift`` with ``(scale, shift)`` from the
    embedding; ``h = conv2(Dropout(SiLU(h)))`` (zero-initialised); ``out = skip(x) + h``.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, norm_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(norm_groups, out_ch, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context=None, context_mask=None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, emb=None, context=None, context_mask=None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor, emb=None, context=None, context_mask=None) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """A sequence of layers that all take ``(x, emb, context, context_mask)``."""

    def forward(self, x, emb, context, context_mask):
        for layer in self:
            x = layer(x, emb, context, context_mask)
        return x


def coord_channels(x: torch.Tensor) -> torch.Tensor:
    """``[N, 2, H, W]``: each pixel's x (channel 0) and y (channel 1), from -1 at the first pixel's centre to 1 at
    the last's, in ``x``'s dtype and device."""
    n, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
    return grid.unsqueeze(0).expand(n, 2, h, w)


class UNet(nn.Module):
    """Denoising U-Net; see the module docstring for the layout and :class:`UNetConfig` for options."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        emb_dim = 4 * c.model_channels
        self.time_embed = TimestepEmbedding(c.model_channels, emb_dim)
        self.class_embed = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes is not None else None
        self.conv_in = nn.Conv2d(c.in_channels + c.concat_channels + 2 * c.coord_input, c.model_channels, 3,
                                 padding=1)

        def res(cin, cout):
            return ResBlock(cin, cout, emb_dim, c.dropout, c.norm_groups)

        def attn(ch, where):
            resolve_heads(ch, c.num_heads, c.head_dim, where)  # fail early, naming the layer
            if c.context_dim is not None:
                return SpatialTransformer(ch, c.context_dim, num_heads=c.num_heads, head_dim=c.head_dim,
                                          depth=c.transformer_depth, dropout=c.dropout,
                                          norm_groups=c.norm_groups)
            return SelfAttention2d(ch, num_heads=c.num_heads, head_dim=c.head_dim, norm_groups=c.norm_groups)

        ch = c.model_channels
        skips = [ch]
        self.down = nn.ModuleList()
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers = [res(ch, c.model_channels * mult)]
                ch = c.model_channels * mult
                if level in c.attention_levels:
                    layers.append(attn(ch, f"down level {level}"))
                self.down.append(Stage(layers))
                skips.append(ch)
            if level != len(c.channel_mult) - 1:
                self.down.append(Stage([Downsample(ch)]))
                skips.append(ch)
        self.middle = Stage([res(ch, ch), attn(ch, "middle"), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skips.pop(), c.model_channels * mult)]
                ch = c.model_channels * mult
                if level in c.attention_levels:
                    layers.append(attn(ch, f"up level {level}"))
                if level != 0 and i == c.num_res_blocks:
                    layers.append(Upsample(ch))
                self.up.append(Stage(layers))
        self.norm_out = nn.GroupNorm(c.norm_groups, ch, eps=1e-6)
        self.conv_out = nn.Conv2d(ch, c.output_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def null_class(self) -> int | None:
        """The class index meaning "no class" (classifier-free guidance), or None without class input."""
        return self.config.num_classes

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2^(levels-1)``)."""
        return 2 ** (len(self.config.channel_mult) - 1)

    def _check_inputs(self, x, t, class_labels, context, context_mask, concat) -> torch.Tensor:
        c = self.config
        if x.dim() != 4:
            raise ValueError(f"UNet: x must be [N, C, H, W], got shape {tuple(x.shape)}")
        n, ch, h, w = x.shape
        if ch != c.in_channels:
            raise ValueError(f"UNet: x has {ch} channels, the config says in_channels={c.in_channels}")
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(
                f"UNet: input size {h}x{w} must be divisible by {m} (2^(levels-1) with "
                f"{len(c.channel_mult)} levels); pad to {-(-h // m) * m}x{-(-w // m) * m}"
            )
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ValueError(f"UNet: t must be a scalar or [N]=[{n}], got shape {tuple(t.shape)}")
        if c.num_classes is not None:
            if class_labels is None:
                raise ValueError(f"UNet: num_classes={c.num_classes} but class_labels is None; pass [N] labels "
                                 f"(the null class is {c.num_classes})")
            if class_labels.shape != (n,) or class_labels.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"UNet: class_labels must be int [N]=[{n}], got {class_labels.dtype} "
                                 f"{tuple(class_labels.shape)}")
            if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) > c.num_classes):
                raise ValueError(f"UNet: class_labels must lie in [0, {c.num_classes}] ({c.num_classes} = null "
                                 f"class), got {int(class_labels.min())}..{int(class_labels.max())}")
        elif class_labels is not None:
            raise ValueError("UNet: class_labels given but the config has num_classes=None")
        if c.context_dim is not None:
            if context is None:
                raise ValueError(f"UNet: context_dim={c.context_dim} but context is None; pass [N, S, "
                                 f"{c.context_dim}] tokens (zeros or an all-False mask for 'no context')")
            if context.dim() != 3 or context.shape[0] != n or context.shape[2] != c.context_dim:
                raise ValueError(f"UNet: context must be [N={n}, S, {c.context_dim}], got {tuple(context.shape)}")
            if context_mask is not None and context_mask.shape != context.shape[:2]:
                raise ValueError(f"UNet: context_mask must be [N, S]={tuple(context.shape[:2])}, "
                                 f"got {tuple(context_mask.shape)}")
        elif context is not None or context_mask is not None:
            raise ValueError("UNet: context given but the config has context_dim=None")
        if c.concat_channels:
            if concat is None or concat.shape != (n, c.concat_channels, h, w):
                got = None if concat is None else tuple(concat.shape)
                raise ValueError(f"UNet: concat must be [N, {c.concat_channels}, H, W]={(n, c.concat_channels, h, w)}"
                                 f", got {got}")
        elif concat is not None:
            raise ValueError("UNet: concat given but the config has concat_channels=0")
        return t

    def forward(self, x: torch.Tensor, t: torch.Tensor, *, class_labels: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                concat: torch.Tensor | None = None) -> torch.Tensor:
        """Run the U-Net.

        Args:
            x: ``[N, in_channels, H, W]``, H and W divisible by :attr:`size_multiple`.
            t: ``[N]`` (or scalar) timesteps, integer or float.
            class_labels: ``[N]`` int64 in ``[0, num_classes]`` (``num_classes`` = null class).
            context: ``[N, S, context_dim]`` cross-attention tokens.
            context_mask: ``[N, S]`` bool, True for real tokens.
            concat: ``[N, concat_channels, H, W]`` channels appended to ``x``.

        Returns:
            ``[N, output_channels, H, W]``.
        """
        t = self._check_inputs(x, t, class_labels, context, context_mask, concat)
        dtype = self.conv_in.weight.dtype
        emb = self.time_embed(t)
        if self.class_embed is not None:
            emb = emb + self.class_embed(class_labels)
        if context is not None:
            context = context.to(dtype)
        h = x.to(dtype) if concat is None else torch.cat([x, concat], dim=1).to(dtype)
        if self.config.coord_input:
            h = torch.cat([h, coord_channels(h)], dim=1)
        h = self.conv_in(h)
        hs = [h]
        for stage in self.down:
            h = stage(h, emb, context, context_mask)
            hs.append(h)
        h = self.middle(h, emb, context, context_mask)
        for stage in self.up:
            h = stage(torch.cat([h, hs.pop()], dim=1), emb, context, context_mask)
        return self.conv_out(F.silu(self.norm_out(h)))

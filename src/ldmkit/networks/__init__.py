"""Neural networks used as denoisers. This package knows nothing about diffusion."""

from ldmkit.networks.unet import UNET_PRESETS, UNet, UNetConfig, unet_config

__all__ = ["UNET_PRESETS", "UNet", "UNetConfig", "unet_config"]

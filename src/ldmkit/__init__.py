"""ldmkit: train, sample and evaluate DDPM, Improved DDPM and Latent Diffusion models.

Importing ``ldmkit`` is light: it pulls torch and numpy only. Optional parts (text encoder, web UI,
benchmark peers) are imported lazily by the code that needs them.
"""

__version__ = "0.1.0"

from ldmkit.types import Batch, Cond, Prediction

__all__ = ["Batch", "Cond", "Prediction", "__version__"]

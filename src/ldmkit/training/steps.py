"""Train steps: what one optimizer step of a run does. The :class:`~ldmkit.training.loop.Trainer` runs any of them.

A train step owns its modules, optimizers and state and is called once per step::

    logs = train_step(ctx, step)        # ctx: the trainer's StepContext; step: 0-based optimizer step

It does its updates through ``ctx.optimize(optimizer, module, loss_of)``, which gives every step the same
gradient accumulation over micro-batches, DDP synchronisation, bf16 autocast, gradient clipping and NaN
guard. What the trainer reads from a step:

- ``modules``: named modules, checkpointed as ``NAME.safetensors`` (``model`` is the exported one);
- ``optimizers``: named optimizers, checkpointed with their state; the learning-rate schedule scales each
  optimizer's own base rate;
- ``ema``: an :class:`~ldmkit.training.ema.EMA` of ``modules["model"]`` or ``None``;
- ``state_dict() -> {group: tensors}`` / ``load_state_dict(groups)``: further state (a timestep sampler's
  loss history) for exact resume.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from ldmkit.training.config import TrainConfig
from ldmkit.training.ema import EMA
from ldmkit.types import Batch

LossFn = Callable[[torch.nn.Module, Batch], tuple[torch.Tensor, dict[str, Any]]]
# loss_of(module, batch, micro_batch_index) -> (scalar loss, {name: scalar})
LossOf = Callable[[torch.nn.Module, Batch, int], tuple[torch.Tensor, dict[str, Any]]]


class StepContext(Protocol):
    """What a train step may ask of the trainer (implemented by ``Trainer``)."""

    def optimize(self, optimizer: str, module: str, loss_of: LossOf) -> tuple[float, dict[str, float]]: ...


class TrainStep(Protocol):
    modules: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    ema: EMA | None

    def __call__(self, ctx: StepContext, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]: ...

    def load_state_dict(self, groups: dict[str, dict[str, torch.Tensor]]) -> None: ...


class LossStep:
    """One model, one ``loss_fn(model, batch) -> (loss, logs)``, AdamW and an EMA: the diffusion train step.

    ``loss_fn`` may have ``state_dict``/``load_state_dict`` (saved as ``loss_fn.safetensors``). The optimizers
    here use PyTorch's fused Adam kernels (``fused=True``; the same update, one kernel for all tensors: 17 ms
    -> 4 ms per step for the 7.3M-parameter recipe U-Net on 2 CPU threads, docs/benchmarks.md).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn, cfg: TrainConfig):
        self.modules = {"model": model}
        self.loss_fn = loss_fn
        self.optimizers = {"optimizer": torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.adam_betas,
                                                          weight_decay=cfg.weight_decay, fused=True)}
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)

    def __call__(self, ctx: StepContext, step: int) -> dict[str, float]:
        loss, logs = ctx.optimize("optimizer", "model", lambda model, batch, m: self.loss_fn(model, batch))
        return {"loss": loss, **logs}

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"loss_fn": self.loss_fn.state_dict()} if hasattr(self.loss_fn, "state_dict") else {}

    def load_state_dict(self, groups: dict[str, dict[str, torch.Tensor]]) -> None:
        if hasattr(self.loss_fn, "load_state_dict"):
            self.loss_fn.load_state_dict(groups.get("loss_fn", {}))


# generator_loss(autoencoder, discriminator, batch, step) -> (loss, logs, reconstruction)
GeneratorLoss = Callable[[torch.nn.Module, torch.nn.Module, Batch, int],
                         tuple[torch.Tensor, dict[str, Any], torch.Tensor]]
# discriminator_loss(discriminator, batch, detached reconstruction, step) -> (loss, logs); a loss without
# a graph (before the discriminator starts) skips the discriminator update.
DiscriminatorLoss = Callable[[torch.nn.Module, Batch, torch.Tensor, int], tuple[torch.Tensor, dict[str, Any]]]


class GANStep:
    """Autoencoder + patch discriminator: ``generator_loss`` then ``discriminator_loss``, two Adam optimizers.

    Each step (Esser et al. 2021; Rombach et al. 2022, Sec. 3.1):

    1. update the autoencoder on ``generator_loss`` (reconstruction + perceptual + regulariser + adaptive
       adversarial term); the discriminator's parameters are frozen meanwhile, so only the autoencoder
       gets gradients;
    2. update the discriminator on ``discriminator_loss`` against the detached reconstructions of step 1.

    The two losses are plain functions (DESIGN principle 8): no ``optimizer_idx`` switch.
    """

    def __init__(self, autoencoder: torch.nn.Module, discriminator: torch.nn.Module,
                 generator_loss: GeneratorLoss, discriminator_loss: DiscriminatorLoss, *, lr: float,
                 disc_lr: float, betas: tuple[float, float]):
        self.modules = {"model": autoencoder, "discriminator": discriminator}
        self.generator_loss, self.discriminator_loss = generator_loss, discriminator_loss
        trainable = [p for p in autoencoder.parameters() if p.requires_grad]
        self.optimizers = {"optimizer": torch.optim.Adam(trainable, lr=lr, betas=betas, fused=True),
                           "disc_optimizer": torch.optim.Adam(discriminator.parameters(), lr=disc_lr, betas=betas,
                                                              fused=True)}
        self.ema = None

    def __call__(self, ctx: StepContext, step: int) -> dict[str, float]:
        disc = self.modules["discriminator"]
        recons: dict[int, torch.Tensor] = {}

        def g_loss(ae, batch, m):
            loss, logs, recon = self.generator_loss(ae, disc, batch, step)
            recons[m] = recon.detach()
            return loss, logs

        disc.requires_grad_(False)
        try:
            loss, logs = ctx.optimize("optimizer", "model", g_loss)
        finally:
            disc.requires_grad_(True)
        _, d_logs = ctx.optimize("disc_optimizer", "discriminator",
                                 lambda d, batch, m: self.discriminator_loss(d, batch, recons[m], step))
        return {**logs, **d_logs, "loss": loss}

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        return {}

    def load_state_dict(self, groups: dict[str, dict[str, torch.Tensor]]) -> None:
        del groups

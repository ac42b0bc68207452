"""Exponential moving average of a model's weights (timm's ``ModelEma``, used by VideoMAE fine-tuning)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """A detached copy whose floating-point weights follow ``decay * ema + (1 - decay) * weights``.

    Buffers that are not floating point (counters) are copied as they are. The copy lives on the
    device of the model it was made from and is never trained; ``state_dict`` /
    ``load_state_dict`` make it resumable.

    Args:
        model: the model to follow (an unwrapped module: pass ``model.module`` under DDP).
        decay: weight of the old average at each update (VideoMAE 0.9999).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module, taken: torch.Tensor | None = None) -> None:
        """Move the average towards ``model``'s current weights (call after each optimiser step).

        ``taken``: 0-dim bool on the device, False for a step the optimiser skipped, which then
        leaves the average as it is, decided on the device (no host sync); None: always taken.
        ``updates`` counts the calls. Under FSDP2 (sharded DTensor weights) every rank must call it:
        each weight is gathered whole (one more all-gather of the model per step), so every rank
        keeps the whole average, as evaluation and ``ema.safetensors`` need it."""
        own = self.module.state_dict()
        weight = None if taken is None else (1 - self.decay) * taken.float()
        for name, value in model.state_dict().items():
            target = own[name]
            if hasattr(value, "full_tensor"):  # a sharded DTensor: the average is kept whole
                value = value.full_tensor()
            value = value.to(target.device)
            if not target.dtype.is_floating_point:
                target.copy_(value)
            elif weight is None:
                target.mul_(self.decay).add_(value.to(target.dtype), alpha=1 - self.decay)
            else:
                target.lerp_(value.to(target.dtype), weight.to(target.dtype))
        self.updates += 1

    def state_dict(self) -> dict:
        """Weights (CPU) and the update count, ``torch.save``-able with ``weights_only=True``."""
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()},
                "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.decay = float(state.get("decay", self.decay))
        self.updates = int(state.get("updates", 0))

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights as a flat tensor dict (for ``ema.safetensors``)."""
        return {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}

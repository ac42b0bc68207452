"""Optimiser parameter groups, layer-wise decay and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Norms, biases, 1-D parameters and position/mask tokens take no weight decay (VideoMAE)."""
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "token" in name


def param_groups(model: nn.Module, weight_decay: float,
                 layer_decay: float | None = None, num_layers: int | None = None) -> list[dict]:
    """AdamW parameter groups: decay / no-decay, optionally scaled per layer (fine-tuning).

    With ``layer_decay`` the learning rate of block ``i`` is scaled by
    ``layer_decay ** (num_layers + 1 - layer_id)`` where the embedding is layer 0 and the head layer
    ``num_layers + 1`` (BEiT/VideoMAE fine-tuning).
    """
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        nd = no_decay(name, p)
        layer = _layer_id(name, num_layers) if layer_decay is not None and num_layers else 0
        key = (nd, layer)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - layer) if layer_decay is not None and num_layers else 1.0
            groups[key] = {"params": [], "weight_decay": 0.0 if nd else weight_decay, "lr_scale": scale}
        groups[key]["params"].append(p)
    return list(groups.values())


def _layer_id(name: str, num_layers: int) -> int:
    if "patch_embed" in name or "pos_embed" in name or name.endswith("mask_token"):
        return 0
    parts = name.split(".")
    if "blocks" in parts:
        return int(parts[parts.index("blocks") + 1]) + 1
    return num_layers + 1


def lr_at(step: int, total: int, peak: float, warmup: int, min_lr: float) -> float:
    """Linear warmup from 0 to ``peak`` over ``warmup`` steps, then cosine down to ``min_lr``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)

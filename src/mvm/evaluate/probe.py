"""Frozen-encoder probes: weighted kNN (DINO-style) and a linear classifier on pooled features."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mvm.config import Config
from mvm.grid import TokenGrid

log = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled encoder tokens for every clip of ``loader``.

    Returns:
        features ``[M, dim]`` float32 (CPU) and labels ``[M]`` long.
    """
    encoder.eval()
    feats, labels = [], []
    for batch in loader:
        tokens = encoder(batch["video"].to(device))  # [B, N, dim], all tokens visible
        feats.append(tokens.float().mean(1).cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(feats), torch.cat(labels)


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 of a cosine-similarity kNN with exp(sim / T) weighted votes (as in DINO / VideoMAE probes).

    Args:
        train_x: ``[M, D]`` bank features; train_y: ``[M]`` labels.
        test_x: ``[Q, D]`` query features; test_y: ``[Q]`` labels.
    """
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    k = min(k, train_x.shape[0])
    sim, idx = (test_x @ train_x.T).topk(k, dim=1)  # [Q, k]
    weights = (sim / temperature).exp()
    classes = int(max(train_y.max(), test_y.max())) + 1
    votes = torch.zeros(test_x.shape[0], classes).scatter_add_(1, train_y[idx], weights)
    return float((votes.argmax(1) == test_y).float().mean())


def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, epochs: int = 300, lr: float = 0.05,
                          weight_decay: float = 1e-4, seed: int = 0) -> float:
    """Top-1 of a logistic-regression head trained full-batch on standardised frozen features."""
    pred = linear_probe_predict(train_x, train_y, test_x, int(max(train_y.max(), test_y.max())) + 1,
                                epochs, lr, weight_decay, seed)
    return float((pred == test_y).float().mean())


def linear_probe_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, classes: int,
                         epochs: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                         seed: int = 0) -> torch.Tensor:
    """Class predictions ``[Q]`` of the logistic-regression probe for ``test_x [Q, D]``."""
    gen = torch.Generator().manual_seed(seed)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    xtr, xte = (train_x - mu) / sd, (test_x - mu) / sd
    head = nn.Linear(xtr.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(xtr), train_y).backward()
        opt.step()
    with torch.no_grad():
        return head(xte).argmax(1)


def probe_loaders(cfg: Config, grid: TokenGrid) -> tuple[DataLoader, DataLoader]:
    """Evaluation loaders (centre clip, centre crop, no motion) over the train and val lists."""
    from mvm.data.datasets import VideoDataset, collate_items
    from mvm.data.loader import worker_init

    data = copy.deepcopy(cfg.data)
    data.motion = "none"

    def loader(source: str) -> DataLoader:
        ds = VideoDataset(source, grid, data, train=False, seed=cfg.train.seed, with_motion=False)
        return DataLoader(ds, batch_size=max(cfg.optim.batch_size, 16), shuffle=False,
                          num_workers=cfg.data.workers, collate_fn=collate_items,
                          worker_init_fn=worker_init if cfg.data.workers else None)

    return loader(cfg.data.train), loader(cfg.data.val)


def probe_encoder(cfg: Config, encoder: nn.Module, device: torch.device, linear: bool = False) -> dict[str, Any]:
    """kNN (and optionally linear) top-1 of ``encoder`` on the config's val list, bank = train list.

    With ``linear``, also ``confusion``: ``[classes, classes]`` counts of the linear probe (rows: true
    class, columns: predicted), as nested lists.
    """
    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    train_loader, val_loader = probe_loaders(cfg, grid)
    xtr, ytr = extract_features(encoder, train_loader, device)
    xte, yte = extract_features(encoder, val_loader, device)
    out = {"knn_top1": knn_accuracy(xtr, ytr, xte, yte)}
    if linear:
        classes = int(max(ytr.max(), yte.max())) + 1
        pred = linear_probe_predict(xtr, ytr, xte, classes, seed=cfg.train.seed)
        out["linear_top1"] = float((pred == yte).float().mean())
        confusion = torch.zeros(classes, classes, dtype=torch.long).index_put_(
            (yte, pred), torch.ones_like(yte), accumulate=True)
        out["confusion"] = confusion.tolist()
    log.info("probe: %s", {k: v for k, v in out.items() if k != "confusion"})
    return out

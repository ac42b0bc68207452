"""Original, masked input and reconstruction of a few clips, one row each, one column per frame."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from mvm.config import Config
from mvm.grid import TokenGrid
from mvm.masking.base import mask_to_indices


def denormalise(video: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W]`` normalised -> [0, 1] pixels."""
    return (video * std.view(1, -1, 1, 1, 1) + mean.view(1, -1, 1, 1, 1)).clamp(0, 1)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, video: torch.Tensor, encoder_mask: torch.Tensor, grid: TokenGrid,
                mean: torch.Tensor, std: torch.Tensor, norm_pix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked input and reconstruction as ``[B, C, T, H, W]`` pixels in [0, 1].

    Every masked token is decoded. For a norm-pix model the prediction is mapped back with the
    original cube's mean and std (as VideoMAE's visualisation does): the picture shows structure
    the model predicted, the colour of each cube comes from the data.
    """
    from mvm.models.patch import patchify, unpatchify

    pixels = denormalise(video, mean, std)
    visible_idx = mask_to_indices(~encoder_mask)
    decode_idx = mask_to_indices(encoder_mask)
    pred = model(video, visible_idx, decode_idx).float()  # [B, Nm, tubelet*p*p*C]
    cubes = patchify(pixels, grid.tubelet, grid.patch)  # [B, N, tubelet*p*p*C]
    b, n, d = cubes.shape
    if norm_pix:
        per = cubes.view(b, n, -1, 3)
        mu, sd = per.mean(2, keepdim=True), per.var(2, unbiased=True, keepdim=True).sqrt() + 1e-6
        pred = (pred.view(b, -1, per.shape[2], 3) * sd.gather(1, decode_idx[..., None, None].expand(-1, -1, 1, 3))
                + mu.gather(1, decode_idx[..., None, None].expand(-1, -1, 1, 3))).view(b, -1, d)
    recon = cubes.clone()
    recon.scatter_(1, decode_idx[..., None].expand(-1, -1, d), pred.clamp(0, 1))
    masked = cubes.clone()
    masked[encoder_mask] = 0.5  # hidden cubes are flat grey: the picture shows what the encoder saw
    return unpatchify(masked, grid), unpatchify(recon, grid)


def plot_reconstructions(cfg: Config, model: torch.nn.Module, grid: TokenGrid, out: str | Path,
                         device: torch.device, clips: int = 3, frames_shown: int = 8) -> Path:
    """Draw ``clips`` validation clips (original / masked / reconstruction rows) with the run's mask."""
    from mvm.data.datasets import VideoDataset
    from mvm.masking import DECODER_MASKS, build_masks
    from mvm.masking.collate import MaskCollator

    enc, _ = build_masks(cfg.mask)
    dec = DECODER_MASKS.build("none", ratio=1.0)  # the picture reconstructs every hidden token
    ds = VideoDataset(cfg.data.val or cfg.data.train, grid, cfg.data, train=False, seed=cfg.train.seed,
                      with_motion=cfg.data.motion != "none" and enc.needs_motion)
    batch = MaskCollator(grid, enc, dec, seed=cfg.train.seed)([ds[i] for i in range(min(clips, len(ds)))])
    mean = torch.tensor(cfg.data.mean, device=device)
    std = torch.tensor(cfg.data.std, device=device)
    video = batch["video"].to(device)
    model.eval()
    masked, recon = reconstruct(model, video, batch["encoder_mask"].to(device), grid, mean, std,
                                cfg.train.target == "norm_pix")
    original = denormalise(video, mean, std)
    t_idx = np.linspace(0, grid.frames - 1, min(frames_shown, grid.frames)).round().astype(int)
    rows = [(f"clip {i}\n{name}", v[i]) for i in range(video.shape[0])
            for name, v in (("original", original), ("masked", masked), ("reconstruction", recon))]
    fig, axes = plt.subplots(len(rows), len(t_idx), figsize=(1.3 * len(t_idx) + 1, 1.3 * len(rows)),
                             dpi=100, squeeze=False)
    for r, (label, clip) in enumerate(rows):
        for c, t in enumerate(t_idx):
            ax = axes[r, c]
            ax.imshow(clip[:, t].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=7)
    ratio = float(batch["encoder_mask"].float().mean())
    note = ("; reconstruction = predicted normalised cubes shown with each cube's true mean and std"
            " (VideoMAE's visualisation), so colours and blob positions come partly from the data"
            if cfg.train.target == "norm_pix" else "")
    fig.suptitle(f"{cfg.mask.encoder} masking, {ratio:.0%} of tokens hidden{note}", fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)

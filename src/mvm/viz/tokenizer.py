"""Tokenizer pictures: a clip's frames, its reconstruction from all tokens and from the top-k, and
the scorer's heat map over the frames (top-k tokens outlined)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mvm.config import Config


def plot_tokenizer_clip(model: torch.nn.Module, clip, cfg: Config, path: str | Path,
                        device: torch.device, max_cols: int = 8) -> Path:
    """Draw one :class:`mvm.tokenizer.evaluate.EvalClip` through ``model`` into ``path`` (PNG).

    Rows: frames, recon from all tokens, recon from the top-k (``tokenizer.budget``), scores
    (per token, upsampled to pixels, top-k outlined). One column per frame (at most ``max_cols``,
    spread over the clip). The row titles carry the clip's PSNRs.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mvm.tokenizer.evaluate import psnr, reconstruct, to_pixels

    model.eval()
    video = clip.video[None].to(device)
    grid = model.grid_for(video)
    k = max(1, int(round(cfg.tokenizer.budget * grid.num_tokens)))
    out = reconstruct(model, video, k, torch.Generator().manual_seed(0))
    target = to_pixels(video, cfg)
    rows = {"frames": target, "all tokens": to_pixels(out["all"], cfg), f"top-{k} tokens": to_pixels(out["topk"], cfg)}
    psnrs = {name: float(psnr(x, target)) for name, x in rows.items() if name != "frames"}
    t = video.shape[2]
    cols = np.unique(np.linspace(0, t - 1, min(max_cols, t)).round().astype(int))
    scores = out["scores"][0].view(*grid.shape).float().cpu()
    keep = out["keep"][0].view(*grid.shape).bool().cpu()
    fig, axes = plt.subplots(4, len(cols), figsize=(1.6 * len(cols), 6.8), squeeze=False)
    for r, (name, x) in enumerate(rows.items()):
        for c, f in enumerate(cols):
            ax = axes[r, c]
            ax.imshow(x[0, :, f].permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([]), ax.set_yticks([])
        label = name if name == "frames" else f"{name}\n{psnrs[name]:.1f} dB"
        axes[r, 0].set_ylabel(label, fontsize=8)
    lo, hi = float(scores.min()), float(scores.max())
    for c, f in enumerate(cols):
        ax = axes[3, c]
        tf = int(f) // grid.tubelet
        ax.imshow(target[0, :, f].permute(1, 2, 0).cpu().numpy().mean(-1), cmap="gray")
        up = scores[tf].repeat_interleave(grid.patch, 0).repeat_interleave(grid.patch, 1)
        ax.imshow(up.numpy(), cmap="inferno", alpha=0.6, vmin=lo, vmax=hi)
        for y, x in keep[tf].nonzero().tolist():
            ax.add_patch(plt.Rectangle((x * grid.patch - 0.5, y * grid.patch - 0.5), grid.patch, grid.patch,
                                       fill=False, edgecolor="cyan", linewidth=0.8))
        if clip.mask is not None:
            ax.contour(clip.mask[f].numpy().astype(float), levels=[0.5], colors="lime", linewidths=0.6)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"frame {f}", fontsize=7)
    axes[3, 0].set_ylabel("scores\n(top-k cyan)", fontsize=8)
    fig.suptitle(Path(clip.path).name, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

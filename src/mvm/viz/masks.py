"""Masks over the frames: one row per strategy, one column per token-frame, motion arrows on top."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mvm.grid import TokenGrid  # noqa: E402


def mask_stats(mask: torch.Tensor, motion: torch.Tensor | None, top: float = 0.1) -> dict[str, float | None]:
    """How much a mask hides, and how much of the fastest-moving content.

    Args:
        mask: ``[N]`` or ``[B, N]`` bool, True = hidden.
        motion: token-grid motion ``[t, h, w, 2]`` or ``[B, t, h, w, 2]`` (pixels), or None.
        top: share of tokens counted as "highest motion" (0.1: the top decile by magnitude).

    Returns:
        ``masked_fraction`` (share of tokens hidden) and ``top_motion_masked`` (share of the
        top-``top`` motion tokens hidden; None without motion or when nothing moves).
    """
    flat = mask.reshape(-1).bool()
    out: dict[str, float | None] = {"masked_fraction": float(flat.float().mean()), "top_motion_masked": None}
    if motion is None:
        return out
    mag = motion.float().norm(dim=-1).reshape(-1)
    if mag.numel() != flat.numel():
        raise ValueError(f"mask has {flat.numel()} tokens, motion {mag.numel()}")
    if float(mag.max()) <= 0:
        return out
    k = max(1, int(round(top * mag.numel())))
    idx = mag.topk(k).indices
    out["top_motion_masked"] = float(flat[idx].float().mean())
    return out


def plot_masks(frames: np.ndarray, masks: dict[str, torch.Tensor], grid: TokenGrid, out: str | Path,
               motion: torch.Tensor | None = None, title: str = "", dim: float = 0.2) -> Path:
    """Write the picture.

    Args:
        frames: ``[T, H, W, 3]`` float in [0, 1] (or uint8), ``T == grid.frames``,
            ``(H, W) == grid.size``.
        masks: strategy name -> ``[N]`` bool (True = hidden from the encoder).
        grid: the token grid of the masks.
        out: PNG path (folders are created).
        motion: token-grid motion ``[t, h, w, 2]`` pixels per frame, drawn as arrows, or None.
        dim: brightness kept by hidden tokens.

    Returns:
        The written path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pix = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
    if pix.shape[:3] != (grid.frames, *grid.size):
        raise ValueError(f"frames {pix.shape[:3]} do not match the grid's {(grid.frames, *grid.size)}")
    t, h, w, p = grid.t, grid.h, grid.w, grid.patch
    cell = min(1.8, 40.0 / t)  # inches per column; long clips get narrower columns
    rows = max(1, len(masks))
    fig, axes = plt.subplots(rows, t, figsize=(cell * t + 1.5, cell * rows * grid.h / grid.w + 0.8),
                             squeeze=False)
    vec = None if motion is None else motion.detach().float().cpu().numpy()  # [t, h, w, 2]
    scale = 1.0
    if vec is not None:
        # Arrows scaled so the 99th-percentile speed spans one token.
        scale = max(float(np.percentile(np.linalg.norm(vec, axis=-1), 99)), 1e-3) / p
    ys, xs = (np.mgrid[0:h, 0:w] + 0.5) * p
    for row, (name, mask) in enumerate(masks.items()):
        hidden = mask.reshape(t, h, w).cpu().numpy()
        stats = mask_stats(mask, motion)
        label = f"{name}: {stats['masked_fraction']:.0%} hidden"
        if stats["top_motion_masked"] is not None:
            label += f", top-motion {stats['top_motion_masked']:.0%}"
        for i in range(t):
            ax = axes[row, i]
            shade = np.where(np.kron(hidden[i], np.ones((p, p))).astype(bool)[..., None], dim, 1.0)
            ax.imshow(pix[i * grid.tubelet] * shade, interpolation="nearest", extent=(0, w * p, h * p, 0))
            if vec is not None:
                ax.quiver(xs, ys, vec[i, ..., 0], vec[i, ..., 1], color="yellow", angles="xy",
                          scale_units="xy", scale=scale, width=0.008)
            ax.set_xlim(0, w * p)
            ax.set_ylim(h * p, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t={i}", fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(title or "encoder masks (hidden tokens dimmed, arrows: token motion)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out

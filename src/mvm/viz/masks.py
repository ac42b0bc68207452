"""What each encoder mask hides, in the spirit of figure 1 of the MGM paper (Fan et al., ICCV 2023).

One column per token-frame. The first row is the clip itself with arrows where the motion is strong
(relative to the frame's median vector, i.e. with the camera's motion taken out, as MGM sees it);
then one row per strategy: the frame at full brightness, its hidden tokens under one
semi-transparent colour, and for the region strategies (MGM, SMM) the rectangle of each
token-frame outlined with the track of its centre over the whole clip, so one sees the region
follow the motion (MGM) or wander (SMM). Row titles sit in a left margin, outside the images.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

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


HIDDEN_RGBA = (0.10, 0.45, 1.00, 0.5)  # one overlay colour for every strategy's hidden tokens
REGION = "#ff8c00"  # outline and centre track of the moving rectangle
ARROW = "#ffe600"

#: ``(rows, cols, top, left)`` of a region strategy's rectangle for one sample: ints, ``top``/``left``
#: of length ``t`` (token units), as ``RegionMask.regions(...)[:4]`` gives them for sample 0.
Region = tuple[int, int, np.ndarray, np.ndarray]


def strong_motion(motion: torch.Tensor, top: float = 0.1, floor: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Camera-compensated token motion and where it is strong.

    Args:
        motion: ``[t, h, w, 2]`` pixels per frame.
        top: share of tokens kept as strong (the fastest ``top`` of the clip).
        floor: minimum speed, pixels per frame, to count as motion at all.

    Returns:
        ``vec`` ``[t, h, w, 2]`` (each token-frame minus its median vector) and ``strong``
        ``[t, h, w]`` bool.
    """
    vec = motion.detach().float().cpu()
    vec = vec - vec.flatten(1, 2).median(dim=1).values[:, None, None, :]
    speed = vec.norm(dim=-1)
    cut = max(float(torch.quantile(speed.flatten(), 1 - top)), floor)
    return vec.numpy(), (speed >= cut).numpy() & (speed.numpy() > 0)


def plot_masks(frames: np.ndarray, masks: dict[str, torch.Tensor], grid: TokenGrid, out: str | Path,
               motion: torch.Tensor | None = None, title: str = "",
               regions: dict[str, Region] | None = None) -> Path:
    """Write the picture.

    Args:
        frames: ``[T, H, W, 3]`` float in [0, 1] (or uint8), ``T == grid.frames``,
            ``(H, W) == grid.size``.
        masks: strategy name -> ``[N]`` bool (True = hidden from the encoder).
        grid: the token grid of the masks.
        out: PNG path (folders are created).
        motion: token-grid motion ``[t, h, w, 2]`` pixels per frame, or None (no motion row).
        title: figure title.
        regions: strategy name -> its rectangle per token-frame (:data:`Region`), outlined with
            its centre track; strategies without one are drawn without.

    Returns:
        The written path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pix = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
    if pix.shape[:3] != (grid.frames, *grid.size):
        raise ValueError(f"frames {pix.shape[:3]} do not match the grid's {(grid.frames, *grid.size)}")
    regions = regions or {}
    t, h, w, p = grid.t, grid.h, grid.w, grid.patch
    rows = [("clip", None)] * (motion is not None) + list(masks.items())
    cell = min(1.7, 22.0 / t)  # inches per column; long clips get narrower columns
    margin = 1.5  # inches of left margin for the row titles
    fig_w = margin + cell * t + 0.1
    # The key: one line when the figure is wide enough, else two per line (a short clip's figure
    # is narrow and a one-line key was cut off at both sides).
    n_keys = 1 + 2 * bool(regions) + (motion is not None)
    key_cols = n_keys if fig_w >= 11 else min(2, n_keys)
    key_h = 0.3 + 0.22 * -(-n_keys // key_cols)
    fig_h = (cell * h / w + 0.08) * len(rows) + 0.55 + key_h
    fig, axes = plt.subplots(len(rows), t, figsize=(fig_w, fig_h), squeeze=False)
    fig.subplots_adjust(left=margin / fig_w, right=1 - 0.1 / fig_w, top=1 - 0.55 / fig_h,
                        bottom=key_h / fig_h, wspace=0.03, hspace=0.06)
    extent = (0, w * p, h * p, 0)
    for r, (name, mask) in enumerate(rows):
        if mask is None:  # the clip with its strong motion
            vec, strong = strong_motion(motion)
            # Arrow length: the median strong speed spans one token; the longest are capped at two.
            speed = np.linalg.norm(vec, axis=-1, keepdims=True)
            unit = max(float(np.median(speed[strong])) if strong.any() else 1.0, 1e-3)
            vec = vec / unit * np.minimum(1.0, 2.0 * unit / np.maximum(speed, 1e-6)) * p
            ys, xs = (np.mgrid[0:h, 0:w] + 0.5) * p
            label = f"clip\nstrong motion\n(top {strong.mean():.0%} tokens,\ncamera removed)"
        else:
            hidden = mask.reshape(t, h, w).cpu().numpy()
            stats = mask_stats(mask, motion)
            label = f"{name}\n{stats['masked_fraction']:.0%} hidden"
            if stats["top_motion_masked"] is not None:
                label += f"\nof the fastest\ntokens: {stats['top_motion_masked']:.0%}"
            region = regions.get(name)
        for i in range(t):
            ax = axes[r, i]
            ax.imshow(pix[i * grid.tubelet], interpolation="nearest", extent=extent)
            if mask is None:
                sel = strong[i]
                if sel.any():
                    ax.quiver(xs[sel], ys[sel], vec[i, ..., 0][sel], vec[i, ..., 1][sel], color=ARROW,
                              angles="xy", scale_units="xy", scale=1.0, width=0.012, headwidth=4,
                              edgecolor="black", linewidth=0.4)
            else:
                overlay = np.zeros((h, w, 4), np.float32)
                overlay[hidden[i]] = HIDDEN_RGBA
                ax.imshow(overlay, interpolation="nearest", extent=extent)
                if region is not None:
                    _draw_region(ax, region, i, p)
            ax.set_xlim(0, w * p)
            ax.set_ylim(h * p, 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"token-frame {i}" if t <= 8 else str(i), fontsize=7)
        box = axes[r, 0].get_position()
        fig.text(0.08 / fig_w, (box.y0 + box.y1) / 2, label, ha="left", va="center", fontsize=8,
                 fontweight="bold" if mask is not None else "normal")
    handles = [Patch(facecolor=HIDDEN_RGBA, label="hidden from the encoder")]
    if regions:
        handles += [Patch(facecolor="none", edgecolor=REGION, linewidth=2, label="moving region (this token-frame)"),
                    Line2D([], [], color=REGION, linestyle="--", marker="o", markersize=3,
                           label="region centre over the clip")]
    if motion is not None:
        handles.append(Line2D([], [], color=ARROW, marker=r"$\rightarrow$", linestyle="none", markersize=10,
                              label="strong motion (px/frame, camera removed)"))
    fig.legend(handles=handles, loc="lower center", ncol=key_cols, fontsize=8, frameon=False)
    fig.suptitle(title or "encoder masks", fontsize=9)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _draw_region(ax, region: Region, i: int, patch: int) -> None:
    """Outline token-frame ``i``'s rectangle and the centre track over all token-frames."""
    rows, cols, top, left = region
    cy = (np.asarray(top) + rows / 2) * patch
    cx = (np.asarray(left) + cols / 2) * patch
    ax.plot(cx, cy, "--", color=REGION, linewidth=1.0, alpha=0.9)
    ax.plot(cx[: i + 1], cy[: i + 1], "o", color=REGION, markersize=2.5, alpha=0.9)
    ax.plot(cx[i], cy[i], "o", color=REGION, markersize=5, markeredgecolor="white", markeredgewidth=0.8)
    ax.add_patch(Rectangle((left[i] * patch, top[i] * patch), cols * patch, rows * patch, fill=False,
                           edgecolor=REGION, linewidth=2.0))

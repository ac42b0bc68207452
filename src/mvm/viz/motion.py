"""Picture of a motion field: a few frames with arrows on top, colour-coded direction below, and a
colour-wheel key that says which colour is which direction and how bright is how fast."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import hsv_to_rgb  # noqa: E402

from mvm.motion.field import MotionField  # noqa: E402


def direction_colours(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
    """``[..., 2]`` motion -> ``[..., 3]`` RGB in [0, 1]: hue = direction, brightness = speed.

    Right is red, down yellow-green, left cyan, up violet (image coordinates, y down).
    """
    mag = np.linalg.norm(flow, axis=-1)
    scale = max_mag if max_mag else max(float(mag.max(initial=0.0)), 1e-6)
    hue = (np.arctan2(flow[..., 1], flow[..., 0]) / (2 * np.pi)) % 1.0
    hsv = np.stack([hue, np.ones_like(hue), np.clip(mag / scale, 0, 1)], -1)
    return hsv_to_rgb(hsv)


def draw_direction_key(ax: plt.Axes, vmax: float, size: int = 101) -> None:
    """The key to :func:`direction_colours`: a wheel whose colour at each point is the colour of a
    motion pointing that way from the centre, full brightness at ``vmax`` pixels/frame on the rim.

    Image coordinates (y down), as in the frames: the bottom of the wheel is motion downwards.
    """
    r = np.linspace(-1.0, 1.0, size)
    grid = np.stack(np.meshgrid(r, r), -1)  # [size, size, 2] (x right, y down)
    rgb = direction_colours(grid * vmax, vmax)
    inside = np.linalg.norm(grid, axis=-1) <= 1.0
    rgba = np.concatenate([rgb, inside[..., None].astype(rgb.dtype)], -1)
    ax.imshow(rgba, extent=(-1, 1, 1, -1), interpolation="bilinear")
    for x, y, text, ha, va in ((1.08, 0, "right", "left", "center"), (-1.08, 0, "left", "right", "center"),
                               (0, -1.1, "up", "center", "bottom"), (0, 1.1, "down", "center", "top")):
        ax.text(x, y, text, ha=ha, va=va, fontsize=8)
    ax.set_xlim(-1.7, 1.7)
    ax.set_ylim(1.9, -1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"key: direction = colour,\nspeed = brightness\n(rim: {vmax:.1f} px/frame or more)", fontsize=8)


def plot_motion(frames: np.ndarray, field: MotionField, out: str | Path, shown: int = 4,
                title: str = "", arrow_step: int | None = None) -> Path:
    """Draw ``shown`` evenly spaced frames: frame + arrows (top row), direction colours (bottom).

    Args:
        frames: ``[F, H, W, 3]`` uint8, the frames the field was computed on.
        field: per-frame motion (``flow [F, Hm, Wm, 2]``).
        out: PNG path (folders are created).
        arrow_step: draw every n-th cell's arrow (default: about 16 arrows across).

    Returns:
        The written path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    nf, h, w = frames.shape[:3]
    picks = np.unique(np.linspace(min(1, nf - 1), nf - 1, min(shown, nf)).round().astype(int))
    hm, wm = field.flow.shape[1:3]
    step = arrow_step or max(1, wm // 16)
    vmax = max(float(np.percentile(field.magnitude(), 99)), 1e-3)
    fig, axes = plt.subplots(2, len(picks) + 1, figsize=(3 * len(picks) + 2, 6 * min(1.0, h / w) + 1.8), squeeze=False,
                             gridspec_kw={"width_ratios": [1.0] * len(picks) + [0.65]})
    axes[0, -1].axis("off")
    draw_direction_key(axes[1, -1], vmax)
    ys, xs = np.mgrid[0:hm:step, 0:wm:step]
    for col, f in enumerate(picks):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(frames[f])
        v = field.flow[f, ::step, ::step]
        # quiver with angles="xy" in image coordinates: y grows downwards, as our dy does.
        top.quiver((xs + 0.5) * field.block, (ys + 0.5) * field.block, v[..., 0], v[..., 1],
                   color="yellow", angles="xy", scale_units="xy", scale=vmax / (field.block * step),
                   width=0.006)
        # Arrows are scaled so that the 99th-percentile speed spans one arrow spacing.
        top.set_title(f"frame {f}" + ("" if field.valid[f] else " (filled)"), fontsize=9)
        bottom.imshow(frames[f], alpha=0.35)
        bottom.imshow(direction_colours(field.flow[f], vmax), extent=(0, w, h, 0), alpha=0.8,
                      interpolation="nearest")
        mag = float(np.linalg.norm(field.flow[f], axis=-1).mean())
        bottom.set_title(f"direction, mean {mag:.2f} px/frame", fontsize=9)
        for ax in (top, bottom):
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.axis("off")
    fig.suptitle(title or f"motion: {field.source} ({field.codec}), block {field.block} px", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

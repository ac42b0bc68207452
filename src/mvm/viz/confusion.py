"""Confusion matrices of probes, side by side (e.g. pretrained next to random init)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def class_names(list_path: str | Path, classes: int) -> list[str]:
    """Names from a ``classes.txt`` beside the list file (one per line, as ``mvm synth`` writes), else numbers."""
    path = Path(list_path)
    names_file = (path if path.is_dir() else path.parent) / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        if len(names) >= classes:
            return names[:classes]
    return [str(i) for i in range(classes)]


def plot_confusions(matrices: dict[str, list[list[int]]], names: list[str], out: str | Path,
                    title: str = "") -> Path:
    """One panel per ``{title: [classes, classes] counts}``; rows true class, columns predicted,
    colour = share of the row, numbers = counts, top-1 in the panel title."""
    full = [np.asarray(c, dtype=float) for c in matrices.values()]
    # Only the classes that occur (as truth or prediction) in some panel: 400 Kinetics classes on a
    # small validation set would otherwise be an unreadable 400 x 400 grid.
    seen = np.flatnonzero(sum(m.sum(0) + m.sum(1) for m in full) > 0) if full else np.arange(0)
    keep = seen if len(seen) else np.arange(len(names))
    shown = [names[i] for i in keep]
    labelled = len(keep) <= 40  # beyond that, tick labels and counts only smear
    side = min(12.0, max(4.4, 0.16 * len(keep)))
    fig, axes = plt.subplots(1, len(matrices), figsize=(side * 1.05 * len(matrices), side), dpi=100,
                             squeeze=False)
    for ax, label, m in zip(axes[0], matrices, full):
        total, right = m.sum(), np.trace(m)
        m = m[np.ix_(keep, keep)]
        share = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), n in np.ndenumerate(m):
            if n and labelled:
                ax.text(c, r, int(n), ha="center", va="center", fontsize=7,
                        color="white" if share[r, c] > 0.5 else "black")
        if labelled:
            ax.set_xticks(range(len(shown)), shown, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(shown)), shown, fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        hidden = f", {len(names) - len(keep)} absent classes left out" if len(keep) < len(names) else ""
        ax.set_title(f"{label}: top-1 {right / max(total, 1):.1%}{hidden}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)

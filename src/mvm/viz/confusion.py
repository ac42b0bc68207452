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
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.4), dpi=100, squeeze=False)
    for ax, (label, counts) in zip(axes[0], matrices.items()):
        m = np.asarray(counts, dtype=float)
        share = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (r, c), n in np.ndenumerate(m):
            if n:
                ax.text(c, r, int(n), ha="center", va="center", fontsize=7,
                        color="white" if share[r, c] > 0.5 else "black")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{label}: top-1 {np.trace(m) / max(m.sum(), 1):.1%}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)

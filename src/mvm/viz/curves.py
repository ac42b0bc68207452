"""Training curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from mvm.train.metrics import read_metrics


def plot_loss_curve(metrics_path: str | Path, out: str | Path) -> Path:
    """Loss (log scale) and learning rate against step; returns ``out``."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", lw=1.5, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("masked reconstruction loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["lr"] for r in rows], color="tab:orange", lw=1, alpha=0.7, label="lr")
    ax2.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(f"pretraining loss ({Path(metrics_path).parent.name})")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)

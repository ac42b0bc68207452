"""Training curves from a run's ``metrics.jsonl``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from mvm.train.metrics import read_metrics


def plot_loss_curve(metrics_path: str | Path, out: str | Path) -> Path:
    """Loss (log scale), its parts when there are several, and learning rate against step; returns ``out``."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r]
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", lw=1.5, label="loss")
    if any("motion_loss" in r for r in rows):  # the codec-motion target: show both terms of the sum
        ax.plot(steps, [r.get("recon_loss", float("nan")) for r in rows], color="tab:green", lw=1,
                label="reconstruction (masked tokens)")
        ax.plot(steps, [r.get("motion_loss", float("nan")) for r in rows], color="tab:red", lw=1,
                label="codec motion (visible tokens)")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
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

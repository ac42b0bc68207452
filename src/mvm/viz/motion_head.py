"""What the codec-motion head learned: its motion next to the codec's, token by token."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mvm.config import Config  # noqa: E402
from mvm.grid import TokenGrid  # noqa: E402
from mvm.viz.recon import denormalise  # noqa: E402


@torch.no_grad()
def predict_motion(model: torch.nn.Module, video: torch.Tensor, grid: TokenGrid, scale: float) -> torch.Tensor:
    """Motion of every token with all tokens visible: ``[B, C, T, H, W]`` -> ``[B, t, h, w, 2]`` px/frame."""
    motion = model.motion_head(model.encoder(video))  # [B, N, 2]: the head reads encoder tokens only
    return motion.float().view(video.shape[0], *grid.shape, 2) * scale


def plot_motion_predictions(cfg: Config, model: torch.nn.Module, grid: TokenGrid, out: str | Path,
                            device: torch.device, clips: int = 3) -> Path:
    """Validation clips, one column per token-frame: codec motion (yellow) and the head's (cyan)
    arrows over the token-frame's first frame, with the mean end-point error in each title."""
    from mvm.data.datasets import VideoDataset, collate_items

    ds = VideoDataset(cfg.data.val or cfg.data.train, grid, cfg.data, train=False, seed=cfg.train.seed,
                      with_motion=True)
    batch = collate_items([ds[i] for i in range(min(clips, len(ds)))])
    video = batch["video"].to(device)
    model.eval()
    pred = predict_motion(model, video, grid, cfg.train.motion_scale).cpu().numpy()  # [B, t, h, w, 2]
    codec = batch["motion"].numpy()
    pixels = denormalise(video, torch.tensor(cfg.data.mean, device=device),
                         torch.tensor(cfg.data.std, device=device)).cpu()
    fig, axes = plt.subplots(len(pred), grid.t, figsize=(2.2 * grid.t, 2.3 * len(pred)), dpi=100, squeeze=False)
    ys, xs = (np.mgrid[0:grid.h, 0:grid.w] + 0.5) * grid.patch
    vmax = max(float(np.percentile(np.linalg.norm(codec, axis=-1), 99)), 1e-3)
    for i in range(len(pred)):
        for t in range(grid.t):
            ax = axes[i, t]
            ax.imshow(pixels[i, :, t * grid.tubelet].permute(1, 2, 0).numpy())
            # quiver in image coordinates (y down, as our dy); the 99th-percentile speed spans one patch
            for field, colour in ((codec[i, t], "yellow"), (pred[i, t], "cyan")):
                ax.quiver(xs, ys, field[..., 0], field[..., 1], color=colour, angles="xy", scale_units="xy",
                          scale=vmax / grid.patch, width=0.012)
            epe = float(np.linalg.norm(pred[i, t] - codec[i, t], axis=-1).mean())
            ax.set_title(f"clip {i}, t={t}: error {epe:.2f} px", fontsize=7)
            ax.axis("off")
    fig.suptitle("codec motion vectors (yellow) and the encoder's motion head (cyan), every token visible",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)

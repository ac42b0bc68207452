"""Multi-view testing (VideoMAE's protocol): clips x crops per video, softmax averaged over the views.

For each video, ``num_clips`` clips are spread evenly from its first to its last possible start
(:func:`mvm.data.sampling.clip_indices`); every clip is resized so its short side is ``size`` and
cut into ``num_crops`` squares spread evenly along the long side (3: left / centre / right, or
top / centre / bottom for portrait videos; 1: centre). The model's softmax over the
``clips * crops`` views is averaged into one prediction per video. Metrics: top-1, top-5 and the
mean per-class accuracy (the mean of the per-class recalls over the classes present).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mvm.data.sampling import clip_indices

log = logging.getLogger(__name__)


def parse_views(text: str) -> tuple[int, int]:
    """``"5x3"`` -> ``(5, 3)`` (clips, crops)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"views must look like CLIPSxCROPS with positive numbers (e.g. 5x3), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def crop_offsets(long_side: int, size: int, num_crops: int) -> list[int]:
    """Start offsets of ``num_crops`` windows of ``size`` along a side of ``long_side`` pixels,
    evenly spaced from one end to the other (one crop: centred)."""
    slack = max(0, long_side - size)
    if num_crops == 1:
        return [slack // 2]
    return [int(round(i * slack / (num_crops - 1))) for i in range(num_crops)]


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    """``[T, 3, H, W]`` float -> short side ``size``, aspect kept (bilinear, antialiased when shrinking)."""
    h, w = clip.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return clip
    return F.interpolate(clip, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)


def make_views(frames: np.ndarray, num_frames: int, stride: int, size: int, num_clips: int, num_crops: int,
               mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """All views of one decoded video.

    Args:
        frames: ``[F, H, W, 3]`` uint8, the whole video (or segment).
        num_frames, stride: clip length T and temporal stride.
        size: crop side S (also the short side after resizing).
        num_clips, num_crops: views per video = ``num_clips * num_crops``.
        mean, std: per-channel normalisation of [0, 1] pixels.

    Returns:
        ``[num_clips * num_crops, 3, T, S, S]`` float32, clip-major (view ``c * num_crops + k``).
    """
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    views = []
    for c in range(num_clips):
        idx = clip_indices(len(frames), num_frames, stride, train=False, clip_index=c, num_clips=num_clips)
        clip = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float() / 255
        clip = (resize_short_side(clip, size) - m) / s  # [T, 3, H', W']
        h, w = clip.shape[-2:]
        for off in crop_offsets(max(h, w), size, num_crops):
            crop = clip[..., off:off + size, :size] if h > w else clip[..., :size, off:off + size]
            views.append(crop.transpose(0, 1))  # [3, T, S, S]
    return torch.stack(views)


def average_views(logits: torch.Tensor) -> torch.Tensor:
    """``[N, V, K]`` view logits -> ``[N, K]`` class probabilities (softmax per view, then mean)."""
    return logits.float().softmax(-1).mean(1)


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top-1, top-5 (top-k capped at K) and mean per-class accuracy of ``[N, K]`` scores."""
    k = min(5, probs.shape[1])
    topk = probs.topk(k, dim=1).indices  # [N, k]
    hit1 = topk[:, 0] == labels
    hit5 = (topk == labels[:, None]).any(1)
    per_class = [float(hit1[labels == c].float().mean()) for c in labels.unique().tolist()]
    return {"top1": float(hit1.float().mean()), "top5": float(hit5.float().mean()),
            "mean_class_acc": float(np.mean(per_class)) if per_class else 0.0}


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``[classes, classes]`` counts, rows true class, columns predicted."""
    return torch.zeros(classes, classes, dtype=torch.long).index_put_(
        (labels.long(), pred.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)


class MultiViewDataset(torch.utils.data.Dataset):
    """Every view of every video of a data source, one video per item.

    Args:
        entries: :class:`mvm.data.formats.Entry` rows (path, label, optional frame span).
        frames, stride, size, mean, std: clip geometry and normalisation (the model's).
        num_clips, num_crops: the views.

    An item is ``{"views": [V, 3, T, S, S], "label": int, "path": str, "failed": [...]}``; a video
    that cannot be decoded yields no views and one ``"reason|path"`` in ``failed`` (the collate
    drops it, so the count reaches the caller and the run goes on).
    """

    def __init__(self, entries: Sequence[Any], frames: int, stride: int, size: int, num_clips: int,
                 num_crops: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.entries = list(entries)
        self.frames, self.stride, self.size = frames, stride, size
        self.num_clips, self.num_crops, self.mean, self.std = num_clips, num_crops, mean, std

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict:
        from mvm.data.video_io import VideoDecodeError, decode_video

        entry = self.entries[i]
        path, label = entry[0], int(entry[1])
        start = entry[2] if len(entry) > 2 and entry[2] is not None else 0
        end = entry[3] if len(entry) > 3 else None
        try:
            count = None if end is None else end - start
            # Segments seek to the keyframe before ``start`` and decode only their frames.
            decoded = decode_video(path, max_frames=count, start=start) if start else decode_video(path, count)
            frames = decoded.frames
            if len(frames) == 0:
                raise VideoDecodeError(path, "too_short", f"no frames in [{start}, {end})")
            views = make_views(frames, self.frames, self.stride, self.size, self.num_clips, self.num_crops,
                               self.mean, self.std)
        except Exception as e:  # one bad file must not stop an evaluation
            reason = getattr(e, "reason", "decode_error")
            log.warning("skipping %s (%s): %s", path, reason, e)
            return {"views": None, "label": label, "path": path, "failed": [f"{reason}|{path}"]}
        return {"views": views, "label": label, "path": path, "failed": []}


def collate_views(items: list[dict]) -> dict:
    """Stack the usable items: views ``[B, V, 3, T, S, S]``, label ``[B]``, path list; ``failed`` for all."""
    ok = [it for it in items if it["views"] is not None]
    return {"views": torch.stack([it["views"] for it in ok]) if ok else torch.zeros(0),
            "label": torch.tensor([it["label"] for it in ok], dtype=torch.long),
            "path": [it["path"] for it in ok],
            "failed": [f for it in items for f in it["failed"]]}


@torch.no_grad()
def predict_views(model: nn.Module, loader: Any, device: torch.device, max_views_per_batch: int = 16,
                  progress: Callable[[int], None] | None = None, bf16: bool = False) -> dict[str, Any]:
    """Run ``model`` over every view of every video of ``loader`` (batches from
    :class:`MultiViewDataset` and :func:`collate_views`).

    Returns:
        ``{"probs": [N, K], "labels": [N], "paths": [N], "failed": [...]}``; probabilities are the
        view-averaged softmax.
    """
    model.eval()
    probs, labels, paths, failed = [], [], [], []
    for batch in loader:
        views = batch["views"]  # [B, V, 3, T, S, S]
        failed.extend(batch.get("failed", []))
        if views.ndim != 6:  # every video of this batch failed
            if progress is not None:
                progress(len(batch.get("failed", [])))
            continue
        b, v = views.shape[:2]
        flat = views.flatten(0, 1)
        out = []
        for i in range(0, flat.shape[0], max_views_per_batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out.append(model(flat[i:i + max_views_per_batch].to(device)).float().cpu())
        probs.append(average_views(torch.cat(out).view(b, v, -1)))
        labels.append(batch["label"])
        paths.extend(batch["path"])
        if progress is not None:
            progress(b + len(batch.get("failed", [])))
    if not probs:
        raise RuntimeError(f"no video could be evaluated ({len(failed)} failed, e.g. {failed[:1]})")
    return {"probs": torch.cat(probs), "labels": torch.cat(labels), "paths": paths, "failed": failed}

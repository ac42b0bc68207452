"""Which frames of a video make a clip: pure functions of the video length and a generator.

A clip is ``frames`` indices ``stride`` apart, so it touches ``(frames - 1) * stride + 1``
consecutive frames (its *span*). Training draws the start uniformly among the positions where
the span fits; evaluation centres it, or, for VideoMAE's multi-view test, spreads ``num_clips``
starts evenly from the first to the last position and takes number ``clip_index``. A video
shorter than the span keeps the stride from frame 0 and repeats its last frame (VideoMAE pads
short videos the same way), so every clip has exactly ``frames`` indices.
"""

from __future__ import annotations

import numpy as np


def clip_span(frames: int, stride: int) -> int:
    """Consecutive frames covered by a clip of ``frames`` indices ``stride`` apart."""
    return (frames - 1) * stride + 1


def clip_indices(
    num_frames: int,
    frames: int,
    stride: int,
    train: bool,
    rng: np.random.Generator | None = None,
    clip_index: int = 0,
    num_clips: int = 1,
) -> np.ndarray:
    """Frame indices of one clip.

    Args:
        num_frames: frames in the video (>= 1).
        frames: indices per clip (T).
        stride: step between sampled frames.
        train: draw a random start (needs ``rng``); otherwise the centred / evenly spaced start.
        rng: generator for the training start; ``None`` with ``train`` uses a fresh unseeded one.
        clip_index: which of the ``num_clips`` evaluation clips (ignored when training).
        num_clips: evaluation clips spread evenly over the video.

    Returns:
        ``[frames]`` int64 indices in ``[0, num_frames)``, non-decreasing.

    Raises:
        ValueError: for non-positive sizes or a ``clip_index`` outside ``[0, num_clips)``.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index must be in [0, {num_clips}), got {clip_index}")
    slack = num_frames - clip_span(frames, stride)  # start positions beyond 0 where the span fits
    if slack <= 0:
        start = 0  # short video: pad with the last frame below
    elif train:
        rng = rng if rng is not None else np.random.default_rng()
        start = int(rng.integers(0, slack + 1))
    elif num_clips == 1:
        start = slack // 2
    else:
        start = int(round(clip_index * slack / (num_clips - 1)))
    idx = start + np.arange(frames, dtype=np.int64) * stride
    return np.minimum(idx, num_frames - 1)

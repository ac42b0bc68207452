"""Which frames of a video make a clip: pure functions of the video length and a generator.

A clip is ``frames`` indices ``stride`` apart, so it touches ``(frames - 1) * stride + 1``
consecutive frames (its *span*). Training draws the start uniformly among the positions where
the span fits; evaluation centres it, or, for VideoMAE's multi-view test, spreads ``num_clips``
starts evenly from the first to the last position and takes number ``clip_index``. A video
shorter than the span keeps the stride from frame 0 and repeats its last frame (VideoMAE pads
short videos the same way), so every clip has exactly ``frames`` indices.

:class:`EpochSampler` is the order in which dataset items are drawn: a seeded permutation per
epoch, resumable at any position, sharded over ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


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


class EpochSampler(Sampler[int]):
    """Endless ``epoch * n + perm_epoch[j]``, from sample position ``start`` on.

    Position ``p`` (0, 1, 2, ... over the whole run) is epoch ``p // n``, slot ``p % n``; the
    permutation of an epoch is seeded by ``(seed, epoch)``, so a run resumed at ``start``
    continues exactly as the uninterrupted run would have. With ``num_replicas > 1`` each rank
    takes every ``num_replicas``-th position (``start`` counts positions over all ranks).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, start: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one sample, got n={n}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        self.n, self.seed, self.shuffle, self.start = n, seed, shuffle, start
        self.num_replicas, self.rank = num_replicas, rank

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of one epoch, ``[n]``."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self) -> Iterator[int]:
        p = self.start + (self.rank - self.start) % self.num_replicas  # this rank's first position
        epoch, perm = -1, np.arange(0)
        while True:
            e, j = divmod(p, self.n)
            if e != epoch:
                epoch, perm = e, self.order(e)
            yield e * self.n + int(perm[j])
            p += self.num_replicas

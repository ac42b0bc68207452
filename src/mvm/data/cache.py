"""A per-process memory cache of decoded videos, for data sets small enough to hold in RAM.

Decoding dominates the cost of a training sample on small clips (about 18 ms of the 20 ms a
64x64 synthetic item takes here), and a small data set is decoded again every epoch. With
``data.cache_mb > 0`` each process (each DataLoader worker) keeps what it decoded, least recently
used first out once the budget is spent. Cropping, flipping and clip sampling still run on every
draw, so augmentation is unchanged. A cached video is always decoded whole: the same item then
comes out identical whether it was a hit or a miss, which keeps ``--resume`` exact.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from mvm.motion.field import MotionField


@dataclass
class CachedVideo:
    """What a sample needs of one file: ``frames [F, H, W, 3]`` uint8 and its motion field (or None)."""

    frames: np.ndarray
    field: MotionField | None

    @property
    def nbytes(self) -> int:
        extra = 0 if self.field is None else self.field.flow.nbytes + self.field.valid.nbytes
        return int(self.frames.nbytes) + extra


class DecodeCache:
    """LRU of :class:`CachedVideo` keyed by path, capped at ``budget_mb``. One cache serves one
    dataset, whose motion source is fixed, so the path alone names an entry.

    A video larger than the whole budget is never stored. ``hits``/``misses`` count lookups.
    """

    def __init__(self, budget_mb: float) -> None:
        if budget_mb <= 0:
            raise ValueError(f"budget_mb must be positive, got {budget_mb}")
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[str, CachedVideo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, path: str) -> CachedVideo | None:
        item = self._items.get(path)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(path)
        self.hits += 1
        return item

    def put(self, path: str, item: CachedVideo) -> None:
        if item.nbytes > self.budget:
            return
        old = self._items.pop(path, None)
        if old is not None:
            self.used -= old.nbytes
        while self._items and self.used + item.nbytes > self.budget:
            _, evicted = self._items.popitem(last=False)
            self.used -= evicted.nbytes
        self._items[path] = item
        self.used += item.nbytes

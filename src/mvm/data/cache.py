"""A per-process memory cache of decoded videos, bounded in bytes.

Decoding dominates the cost of a training sample on small clips, and a small data set is
decoded again every epoch. With ``data.cache_mb > 0`` each process keeps whole decoded videos
(frames and codec motion vectors, both counted) up to that many megabytes, least recently used
first out. **The budget is per process**: with ``data.workers = W`` loader workers the data
loader holds up to ``W x cache_mb`` in total.

A video whose whole decode would not fit the budget is never decoded whole for the cache: the
dataset decodes only the span a clip needs, as without a cache (see
``mvm.data.datasets.VideoDataset``). Clip placement and the frames cut for a clip do not depend
on whether a video came from the cache, so items are identical either way and ``--resume`` stays
exact.
"""

from __future__ import annotations

from collections import OrderedDict

from mvm.data.video_io import DecodedVideo


class DecodeCache:
    """LRU of whole :class:`DecodedVideo` decodes keyed by path, capped at ``budget_mb``.

    ``used`` counts ``DecodedVideo.nbytes`` (frames + motion vectors); a video larger than the
    whole budget is never stored. ``hits``/``misses`` count lookups.
    """

    def __init__(self, budget_mb: float) -> None:
        if budget_mb <= 0:
            raise ValueError(f"budget_mb must be positive, got {budget_mb}")
        self.budget = int(budget_mb * 2**20)
        self.used = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[str, DecodedVideo] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def fits(self, nbytes: int) -> bool:
        """Whether an item of ``nbytes`` could be stored at all."""
        return nbytes <= self.budget

    def get(self, path: str) -> DecodedVideo | None:
        item = self._items.get(path)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(path)
        self.hits += 1
        return item

    def put(self, path: str, item: DecodedVideo) -> None:
        size = item.nbytes
        if not self.fits(size):
            return
        old = self._items.pop(path, None)
        if old is not None:
            self.used -= old.nbytes
        while self._items and self.used + size > self.budget:
            _, evicted = self._items.popitem(last=False)
            self.used -= evicted.nbytes
        self._items[path] = item
        self.used += size

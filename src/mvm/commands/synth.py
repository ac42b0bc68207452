"""``mvm synth OUT_DIR``: write the built-in synthetic motion dataset (H.264 clips + VideoMAE lists)."""

from __future__ import annotations

import argparse

HELP = "write the built-in synthetic motion dataset (8 motion classes, H.264, VideoMAE list files)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.config import SynthConfig

    d = SynthConfig()  # the main job's set: same defaults here and in the config
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if absent)")
    p.add_argument("--clips", type=int, default=d.clips, help="training clips (balanced over the classes)")
    p.add_argument("--val-clips", type=int, default=d.val_clips, help="validation clips")
    p.add_argument("--frames", type=int, default=d.frames, help="frames per clip")
    p.add_argument("--size", type=int, default=d.size, help="frame side in pixels (even)")
    p.add_argument("--seed", type=int, default=d.seed, help="same seed, same clips")
    p.add_argument("--gop", type=int, default=d.gop, help="H.264 keyframe interval")
    p.add_argument("--bframes", type=int, default=d.bframes, help="H.264 B-frames")
    p.add_argument("--refs", type=int, default=d.refs, help="H.264 reference frames")
    p.add_argument("--pan", type=float, default=d.pan,
                   help="scale of the camera pan (1: 0-1 px/frame at 64 px; 0: a fixed camera)")
    p.add_argument("--background-contrast", type=float, default=d.background_contrast,
                   help="scale of the background texture's contrast (1: 1/f noise; 0: a flat colour)")
    p.add_argument("--object-masks", action="store_true",
                   help="also write each clip's per-frame object mask beside it (NNNNN.mask.npz)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering and encoding")


def run(args: argparse.Namespace) -> int:
    import sys

    from mvm.data.synth import make_synthetic

    try:
        s = make_synthetic(args.out_dir, clips=args.clips, val_clips=args.val_clips, frames=args.frames,
                           size=args.size, seed=args.seed, gop=args.gop, bframes=args.bframes,
                           refs=args.refs, object_masks=args.object_masks, workers=args.workers,
                           pan=args.pan, background_contrast=args.background_contrast)
    except ValueError as e:
        print(f"mvm synth: {e}", file=sys.stderr)
        return 2
    print(f"wrote {s['train']} train + {s['val']} val clips ({len(s['classes'])} classes, "
          f"{s['frames']}x{s['size']}x{s['size']}, {s['bytes'] / 1e6:.1f} MB) to {s['out_dir']} "
          f"in {s['seconds']:.1f} s" + (" with object masks" if args.object_masks else ""))
    return 0

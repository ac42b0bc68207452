"""``mvm motion VIDEO``: motion field of one video as a picture, arrays and/or a JSON summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "show the motion field of a video (codec motion vectors, or block matching without them)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--out", help="PNG picture: a few frames with arrows and colour-coded direction")
    p.add_argument("--npz", help="write dx, dy [frames, rows, cols] float32 pixels and valid [frames]")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--source", choices=["auto", "codec", "estimate"], default="auto",
                   help="auto: codec vectors when the stream has them, else block matching")
    p.add_argument("--block", type=int, default=4, help="grid cell side in pixels (default 4)")
    p.add_argument("--max-frames", type=int, default=None, help="read at most this many frames")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mvm.data.video_io import VideoDecodeError, decode_video
    from mvm.motion.field import frame_motion

    if args.block < 1:
        print(f"mvm motion: --block must be >= 1, got {args.block}", file=sys.stderr)
        return 2
    if args.max_frames is not None and args.max_frames < 2:
        print(f"mvm motion: --max-frames must be >= 2 (motion lies between frames), got {args.max_frames}",
              file=sys.stderr)
        return 2
    try:
        decoded = decode_video(args.video, max_frames=args.max_frames, with_motion=args.source != "estimate")
        field = frame_motion(decoded, args.source, args.block, path=args.video)
    except VideoDecodeError as e:  # the user's file: one line, exit 2, nothing written
        print(f"mvm motion: cannot read motion: {e}", file=sys.stderr)
        return 2
    if args.npz:
        if not args.npz.endswith(".npz"):
            args.npz += ".npz"  # numpy adds it; name the file it really writes
        Path(args.npz).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.npz, dx=field.flow[..., 0], dy=field.flow[..., 1], valid=field.valid,
                            block=np.int64(field.block), source=np.str_(field.source), codec=np.str_(field.codec),
                            height=np.int64(decoded.frames.shape[1]), width=np.int64(decoded.frames.shape[2]))
    if args.out:
        from mvm.viz import picture_path
        from mvm.viz.motion import plot_motion

        args.out = picture_path(args.out, args.video, "motion")

        plot_motion(decoded.frames, field, args.out, title=f"{args.video}: {field.source} motion ({field.codec})")
    mag = field.magnitude()
    summary = {
        "video": str(args.video), "frames": field.num_frames, "height": int(decoded.frames.shape[1]),
        "width": int(decoded.frames.shape[2]), "codec": field.codec, "motion_source": field.source,
        "block": field.block, "grid": list(field.flow.shape[1:3]), "valid_frames": int(field.valid.sum()),
        "pict_types": "".join(decoded.pict_types),
        "mean_magnitude": round(float(mag[field.valid].mean()) if field.valid.any() else 0.0, 4),
        "max_magnitude": round(float(mag.max(initial=0.0)), 4),
    }
    if args.npz:
        summary["npz"] = str(args.npz)
    if args.out:
        summary["picture"] = str(args.out)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"{summary['video']}: {summary['frames']} frames {summary['width']}x{summary['height']} "
              f"{summary['codec']}, motion from {summary['motion_source']}, "
              f"mean {summary['mean_magnitude']:.2f} px/frame over {summary['valid_frames']} measured frames")
        for key in ("picture", "npz"):
            if key in summary:
                print(f"  {key}: {summary[key]}")
    return 0

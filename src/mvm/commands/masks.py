"""``mvm masks VIDEO``: what each encoder mask hides on a real clip, as a picture and/or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "show encoder masks (tube, mgm, smm, random, ...) over the frames of a video, with its motion"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--strategies", default="tube,mgm,smm,random",
                   help="comma-separated encoder mask names (default tube,mgm,smm,random)")
    p.add_argument("--ratio", type=float, default=0.9, help="encoder mask ratio (default 0.9)")
    p.add_argument("--motion-share", type=float, default=0.5,
                   help="smm/mgm: share of the budget on the moving region (default 0.5)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--stride", type=int, default=2, help="temporal stride (default 2)")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels (default 224)")
    p.add_argument("--patch", type=int, default=16, help="patch side in pixels (default 16)")
    p.add_argument("--tubelet", type=int, default=2, help="frames per token (default 2)")
    p.add_argument("--source", choices=["auto", "codec", "estimate", "none"], default="auto",
                   help="motion source (default auto: codec vectors, else block matching)")
    p.add_argument("--start", type=int,
                   help="first frame of the clip (default: the clip in the middle of the video, as evaluation takes it)")
    p.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")
    p.add_argument("--out", help="PNG picture: one row per strategy, one column per token-frame")
    p.add_argument("--json", action="store_true",
                   help="print per strategy the masked fraction and the share of top-decile-motion tokens hidden")


def run(args: argparse.Namespace) -> int:
    import inspect

    import numpy as np
    import torch

    from mvm.config import DataConfig
    from mvm.data.sampling import clip_indices
    from mvm.data.transforms import ClipTransform
    from mvm.data.video_io import VideoDecodeError, decode_video
    from mvm.grid import TokenGrid
    from mvm.masking import ENCODER_MASKS, MaskContext
    from mvm.motion.field import clip_motion, frame_motion, to_token_grid
    from mvm.viz.masks import mask_stats

    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENCODER_MASKS]
    if not names or unknown:
        print(f"mvm masks: unknown strategy {', '.join(unknown) or '(none given)'}; "
              f"known: {', '.join(ENCODER_MASKS.names())}", file=sys.stderr)
        return 2
    try:
        small = [f"--{k} {getattr(args, k)}" for k in ("frames", "stride", "size", "patch", "tubelet")
                 if getattr(args, k) < 1]
        if small:
            raise ValueError(f"{', '.join(small)}: must be >= 1")
        grid = TokenGrid.from_clip(args.frames, args.size, args.tubelet, args.patch)
        strategies = {}
        for name in names:
            cls = ENCODER_MASKS.get(name)
            kw = {"motion_share": args.motion_share} if "motion_share" in inspect.signature(cls).parameters else {}
            strategies[name] = cls(ratio=args.ratio, **kw)
    except ValueError as e:
        print(f"mvm masks: {e}", file=sys.stderr)
        return 2
    try:
        decoded = decode_video(args.video, with_motion=args.source in ("auto", "codec"))
        field = frame_motion(decoded, args.source, path=args.video)
    except VideoDecodeError as e:  # the error names the file; exit 2, nothing written
        print(f"mvm masks: cannot read {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    if args.start is None:
        idx = clip_indices(decoded.num_frames, args.frames, args.stride, train=False, rng=rng)
    else:
        idx = args.start + np.arange(args.frames) * args.stride
        if args.start < 0 or idx[-1] >= decoded.num_frames:
            print(f"mvm masks: --start {args.start}: a clip of {args.frames} frames at stride {args.stride} "
                  f"needs frames {args.start}..{idx[-1]}, {args.video} has 0..{decoded.num_frames - 1}",
                  file=sys.stderr)
            return 2
    data = DataConfig()  # the training normalisation, undone below for the picture
    transform = ClipTransform(args.size, train=False, mean=data.mean, std=data.std)
    video, motion = transform(decoded.frames[idx], clip_motion(field, idx), rng, block=field.block)
    tokens = to_token_grid(motion, grid).float()  # [t, h, w, 2]
    ctx = MaskContext(motion=tokens[None])
    masks, report = {}, {}
    for name, strategy in strategies.items():
        before = getattr(strategy, "fallbacks", 0)
        masks[name] = strategy(grid, 1, torch.Generator().manual_seed(args.seed), ctx)[0]
        report[name] = {k: (None if v is None else round(v, 4)) for k, v in mask_stats(masks[name], tokens).items()}
        if hasattr(strategy, "fallbacks"):
            report[name]["fallback"] = strategy.fallbacks > before
    summary = {"video": str(args.video), "frames": [int(i) for i in idx], "grid": list(grid.shape),
               "ratio": args.ratio, "motion_source": field.source,
               "mean_motion": round(float(tokens.norm(dim=-1).mean()), 4), "strategies": report}
    if args.out:
        from mvm.viz import picture_path

        args.out = picture_path(args.out, args.video, "masks")
    if args.out:
        from mvm.viz.masks import plot_masks

        mean = torch.tensor(data.mean).view(3, 1, 1, 1)
        std = torch.tensor(data.std).view(3, 1, 1, 1)
        pixels = (video * std + mean).clamp(0, 1).permute(1, 2, 3, 0).numpy()  # [T, S, S, 3]
        regions = {}
        for name, strategy in strategies.items():
            if hasattr(strategy, "regions"):  # SMM/MGM: the same seed redraws the rectangle the mask used
                rows, cols, top, left = strategy.regions(grid, 1, torch.Generator().manual_seed(args.seed), ctx)[:4]
                regions[name] = (int(rows[0]), int(cols[0]), top[0], left[0])
        plot_masks(pixels, masks, grid, args.out, motion=tokens, regions=regions,
                   title=f"{Path(args.video).name}: encoder masks at ratio {args.ratio}, "
                         f"{'x'.join(map(str, grid.shape))} tokens, motion from {field.source}")
        summary["picture"] = str(args.out)
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{args.video}: grid {'x'.join(map(str, grid.shape))}, motion from {field.source}, "
          f"mean {summary['mean_motion']:.2f} px/frame")
    print(f"  {'strategy':<14}{'hidden':>8}{'top-motion hidden':>20}")
    for name, row in report.items():
        top = "-" if row["top_motion_masked"] is None else f"{row['top_motion_masked']:.1%}"
        note = "  (no motion: SMM fallback)" if row.get("fallback") else ""
        print(f"  {name:<14}{row['masked_fraction']:>8.1%}{top:>20}{note}")
    if args.out:
        print(f"  picture: {args.out}")
    return 0


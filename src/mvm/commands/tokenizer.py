"""``mvm tokenizer train|score``: the LVMAE video tokenizer (codes, token scores, adaptive masks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "train the LVMAE video tokenizer (FSQ codes + token scorer), or score a video with one"
DEFAULT_PRESET = "tokenizer-tiny"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.commands.common import add_run_arguments

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a tokenizer (no --data: the synthetic set with object masks)")
    add_run_arguments(t, "PSNR with all / top-k / random-k tokens (the run folder is what train.tokenizer takes)")
    s = sub.add_parser("score", help="draw a trained tokenizer's token scores over a video's frames")
    s.add_argument("video", metavar="VIDEO", help="video file")
    s.add_argument("--tokenizer", required=True, metavar="DIR", help="a `mvm tokenizer train` run folder")
    s.add_argument("--out", help="picture to write (default: VIDEO's name + .scores.png)")
    s.add_argument("--json", action="store_true", help="print scores, top-k tokens and PSNRs as JSON")


def run(args: argparse.Namespace) -> int:
    return _train(args) if args.action == "train" else _score(args)


def _train(args: argparse.Namespace) -> int:
    from mvm.commands.common import run_config, run_training
    from mvm.tokenizer.task import run_tokenizer

    # A new run: --config (default tokenizer-tiny), flags, --set. --resume: the run's saved config,
    # then only what is passed again; bad keys and a resume with nothing to resume stop here.
    cfg, source = run_config(args, "tokenizer", DEFAULT_PRESET)
    return run_training(args, "tokenizer train", cfg, _describe(cfg, source), run_tokenizer, _print_summary)


def _describe(cfg, source: str) -> str:
    """The tokenizer run's key values, printed before it starts."""
    d, t, o = cfg.data, cfg.tokenizer, cfg.optim
    return "\n".join([
        f"config      {source}",
        f"data        {d.train or 'built-in synthetic set with object masks (' + d.synth_dir + ')'}; "
        f"val {d.val or ('-' if d.train else 'its val.csv')}",
        f"clips       {d.frames} frames at stride {d.stride}, {d.size} px",
        f"tokenizer   {t.size}, {t.quantizer} {t.levels}, tubelet {cfg.model.tubelet}, patch {cfg.model.patch}, "
        f"top-k budget {t.budget:g}",
        f"training    {cfg.train.steps} steps of {o.batch_size * o.accum_steps} clips, base lr {o.base_lr:g}",
        f"run folder  {cfg.train.out}",
    ])


def _print_summary(s: dict) -> None:
    print(f"\nrun folder      {s['run_dir']}   (use it as train.tokenizer)")
    print(f"steps           {s['steps']}   final loss {s['final_loss']:.4f}")
    if "psnr_all" in s:
        print("\nvalidation PSNR (dB)   all tokens   top-k   random-k (same k)")
        print(f"                       {s['psnr_all']:>10.2f}   {s['psnr_topk']:>5.2f}   {s['psnr_random']:>8.2f}")
    if "object_share" in s:
        print(f"\nobject pixels: {s['object_share']:.1%} of the frame, {s['topk_object_share']:.1%} of the "
              f"top-k tokens ({s['topk_object_ratio']:.1f}x), {s['random_object_share']:.1%} of random-k tokens")
        print(f"tokens touching the object: {s['topk_on_object']:.1%} of the top-k, {s['tokens_on_object']:.1%} of all")
    for p in s.get("clip_pictures", []):
        print(f"picture         {p}")


def _score(args: argparse.Namespace) -> int:
    import torch

    from mvm.data.video_io import VideoDecodeError
    from mvm.tokenizer.evaluate import psnr, read_clip, reconstruct, to_pixels
    from mvm.tokenizer.lvmae import load_tokenizer
    from mvm.train.checkpoint import CheckpointError
    from mvm.viz.tokenizer import plot_tokenizer_clip

    try:
        model, cfg = load_tokenizer(args.tokenizer, torch.device("cpu"))
        clip = read_clip(args.video, cfg)
    except (CheckpointError, VideoDecodeError, FileNotFoundError) as e:
        print(f"mvm tokenizer score: {e}", file=sys.stderr)
        return 2
    from mvm.viz import picture_path

    out_png = Path(picture_path(args.out, args.video, "scores") if args.out else Path(args.video).name + ".scores.png")
    plot_tokenizer_clip(model, clip, cfg, out_png, torch.device("cpu"))
    video = clip.video[None]
    grid = model.grid_for(video)
    k = max(1, int(round(cfg.tokenizer.budget * grid.num_tokens)))
    r = reconstruct(model, video, k, torch.Generator().manual_seed(0))
    target = to_pixels(video, cfg)
    result = {"video": args.video, "tokenizer": args.tokenizer, "picture": str(out_png),
              "grid": list(grid.shape), "k": k,
              "psnr_all": round(float(psnr(to_pixels(r["all"], cfg), target)), 3),
              "psnr_topk": round(float(psnr(to_pixels(r["topk"], cfg), target)), 3),
              "psnr_random": round(float(psnr(to_pixels(r["random"], cfg), target)), 3),
              "topk": r["keep"][0].nonzero().flatten().tolist(),
              "scores": [round(float(v), 4) for v in r["scores"][0]]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.video}: grid {grid.shape}, top-{k} PSNR {result['psnr_topk']:.2f} dB "
              f"(all {result['psnr_all']:.2f}, random-{k} {result['psnr_random']:.2f}); picture {out_png}")
    return 0

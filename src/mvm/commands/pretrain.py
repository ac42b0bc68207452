"""``mvm pretrain``: masked video pretraining; with no arguments, the main job on built-in data."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HELP = "pretrain a masked video autoencoder (no arguments: tiny model on the built-in synthetic set)"
DEFAULT_PRESET = "tiny-synthetic"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.cli import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--data", help="training list file (`path label` per line) or folder of videos")
    p.add_argument("--val", help="validation list or folder for the kNN probe")
    p.add_argument("--out", help="run folder (default: runs/pretrain-<time>)")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--resume", action="store_true", help="continue the newest good checkpoint in --out")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


def _default_out(resume: bool) -> str:
    if resume:
        runs = sorted(Path("runs").glob("pretrain-*"))
        if runs:
            return str(runs[-1])
    return time.strftime("runs/pretrain-%Y%m%d-%H%M%S")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mvm.config import load_config
    from mvm.train.checkpoint import CheckpointError
    from mvm.train.guard import TooManyNonFinite, TooMuchBadData
    from mvm.train.pretrain import run_pretrain

    overrides = list(args.overrides)
    for flag, key in (("data", "data.train"), ("val", "data.val"), ("out", "train.out"), ("steps", "train.steps")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if not any(o.replace(" ", "").startswith("train.out=") for o in overrides):
        overrides.insert(0, f"train.out={_default_out(args.resume)}")  # before --set, which may name one
    cfg = load_config(args.config or DEFAULT_PRESET, overrides)  # refuses bad configs before any work

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 talks
    bar = tqdm(total=cfg.train.steps, desc="pretrain", unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=not main_rank)

    def progress(step: int, total: int, row: dict) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.1e}", clips_s=f"{row['clips_per_s']:.1f}")
        bar.refresh()

    if main_rank:
        print(f"run folder: {cfg.train.out}", file=sys.stderr)
    try:
        summary = run_pretrain(cfg, resume=args.resume, progress=progress)
    except (CheckpointError, TooMuchBadData, TooManyNonFinite) as e:
        bar.close()
        print(f"mvm pretrain: {e}", file=sys.stderr)
        return 1
    bar.close()
    if not main_rank:
        return 0
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    _print_summary(summary)
    return 0 if summary.get("stopped_by") is None else 143


def _print_summary(s: dict) -> None:
    if s.get("stopped_by"):
        print(f"stopped by {s['stopped_by']} at step {s['steps']}; checkpoint {s['checkpoint']}")
        print(f"continue with: mvm pretrain --resume --out {s['run_dir']}")
        return
    print(f"\nrun folder      {s['run_dir']}")
    parts = (f" (reconstruction {s['recon_loss']:.4f} + codec motion {s['motion_loss']:.4f})"
             if "motion_loss" in s else "")
    print(f"steps           {s['steps']}   final loss {s['final_loss']:.4f}{parts}")
    if "knn_top1" in s:
        print("\nprobe on the validation split     pretrained   random init")
        print(f"  kNN top-1 (k=20)                {s['knn_top1']:>9.1%}   {s['knn_top1_random']:>10.1%}")
        if "linear_top1" in s:
            print(f"  linear top-1                    {s['linear_top1']:>9.1%}   {s['linear_top1_random']:>10.1%}")
    if s.get("bad_samples"):
        print(f"\nskipped samples {s['bad_samples']} {s['bad_by_reason']}")
    if s.get("skipped_steps"):
        print(f"skipped steps   {s['skipped_steps']} (non-finite loss or gradient)")
    for key in ("loss_curve", "reconstructions", "motion_predictions", "probe_confusion"):
        if key in s:
            print(f"{key.replace('_', ' '):<19}{s[key]}")

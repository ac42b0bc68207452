"""``mvm pretrain``: masked video pretraining; with no arguments, the main job on built-in data."""

from __future__ import annotations

import argparse

HELP = "pretrain a masked video autoencoder (no arguments: tiny model on the built-in synthetic set)"
DEFAULT_PRESET = "tiny-synthetic"
#: with --data and no --config: a preset for real footage (no codec-motion target, flip on).
FOOTAGE_PRESET = "footage-tiny"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.commands.common import add_run_arguments

    add_run_arguments(p, "the kNN and linear probes")


def run(args: argparse.Namespace) -> int:
    from mvm.commands.common import describe_run, run_config, run_training
    from mvm.train.pretrain import run_pretrain

    cfg, source = run_config(args, "pretrain", DEFAULT_PRESET, FOOTAGE_PRESET)  # refuses bad configs first
    return run_training(args, "pretrain", cfg, describe_run(cfg, source), run_pretrain, _print_summary)


def _print_summary(s: dict) -> None:
    print(f"\nrun folder      {s['run_dir']}")
    parts = (f" (reconstruction {s['recon_loss']:.4f} + codec motion {s['motion_loss']:.4f})"
             if "motion_loss" in s else "")
    print(f"steps           {s['steps']}   final loss {s['final_loss']:.4f}{parts}")
    if "knn_top1" in s:
        print("\nprobe on the validation split     pretrained   random init")
        print(f"  kNN top-1 (k=20)                {s['knn_top1']:>9.1%}   {s['knn_top1_random']:>10.1%}")
        if "linear_top1" in s:
            print(f"  linear top-1                    {s['linear_top1']:>9.1%}   {s['linear_top1_random']:>10.1%}")
    if s.get("probe_skipped"):
        print(f"\nprobe skipped: {s['probe_skipped']}")
    if s.get("bad_samples"):
        print(f"\nskipped samples {s['bad_samples']} {s['bad_by_reason']}")
    if s.get("skipped_steps"):
        print(f"skipped steps   {s['skipped_steps']} (non-finite loss or gradient)")
    for key in ("loss_curve", "reconstructions", "motion_predictions", "probe_confusion"):
        if key in s:
            print(f"{key.replace('_', ' '):<19}{s[key]}")

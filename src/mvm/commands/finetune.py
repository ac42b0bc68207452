"""``mvm finetune``: fine-tune a classifier on an encoder from any checkpoint mvm loads (or from scratch)."""

from __future__ import annotations

import argparse
import sys

HELP = ("fine-tune a video classifier (VideoMAE's recipe) from a checkpoint (--init) or from scratch; "
        "no --data: the built-in synthetic set")
DEFAULT_PRESET = "ft-synthetic"
FOOTAGE_PRESET = "ft-footage-tiny"
#: what --init sets from the checkpoint (the clip's stride and normalisation stay the preset's)
_GEOMETRY = ("name", "tubelet", "patch", "frames", "size")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.commands.common import add_run_arguments

    add_run_arguments(p, "validation top-1 every train.eval_every steps (and the best/ checkpoint)")
    p.add_argument("--init", help="checkpoint to start from: mvm run or checkpoint folder, .safetensors, "
                                  "transformers VideoMAE folder, original VideoMAE .pth (none: from scratch); "
                                  "model size, tubelet, patch, frames and crop size default to the checkpoint's")


def _init_geometry(args: argparse.Namespace) -> list[str]:
    """``section.key=value`` overrides that make a new run match its --init checkpoint's geometry."""
    if args.resume or not args.init:
        return []
    from mvm.models.variants import VARIANTS
    from mvm.train.finetune import checkpoint_geometry

    geo = {k: v for k, v in checkpoint_geometry(args.init).items() if k.split(".")[1] in _GEOMETRY}
    if "model.name" in geo and geo["model.name"] not in VARIANTS:
        geo.pop("model.name")
    return [f"{k}={v}" for k, v in geo.items()]


def run(args: argparse.Namespace) -> int:
    from mvm.commands.common import describe_run, run_config, run_training
    from mvm.interop.load import InteropError
    from mvm.train.checkpoint import CheckpointError
    from mvm.train.finetune import run_finetune

    try:
        # the checkpoint's geometry sits between the preset and the user's own --set values
        args.overrides = _init_geometry(args) + list(args.overrides)
        cfg, source = run_config(args, "finetune", DEFAULT_PRESET, FOOTAGE_PRESET, {"init": "finetune.init"})
    except (CheckpointError, InteropError) as e:
        print(f"mvm finetune: {e}", file=sys.stderr)
        return 2
    f = cfg.finetune
    description = describe_run(cfg, source) + (
        f"\nfine-tune   init {f.init or 'none (from scratch)'}; layer decay {f.layer_decay:g}, drop path "
        f"{cfg.model.drop_path:g}, mixup {f.mixup:g} / cutmix {f.cutmix:g}, smoothing {f.label_smoothing:g}, "
        f"RandAugment n{f.randaug_ops} m{f.randaug_magnitude:g}{', EMA' if f.ema else ''}")
    return run_training(args, "finetune", cfg, description, run_finetune, _print_summary)


def _print_summary(s: dict) -> None:
    print(f"\nrun folder      {s['run_dir']}")
    print(f"steps           {s['steps']}   final loss {s['final_loss']:.4f}")
    if "val_top1" in s:
        print(f"validation      top-1 {s['val_top1']:.1%}   top-5 {s['val_top5']:.1%}   "
              f"best top-1 {s.get('best_val_top1', s['val_top1']):.1%} ({s.get('best_checkpoint', '-')})")
    if "val_top1_ema" in s:
        print(f"EMA weights     top-1 {s['val_top1_ema']:.1%}")
    if s.get("bad_samples"):
        print(f"skipped samples {s['bad_samples']} {s['bad_by_reason']}")
    for key in ("loss_curve", "val_confusion"):
        if key in s:
            print(f"{key.replace('_', ' '):<16}{s[key]}")
    print(f"test it with    mvm evaluate {s['run_dir']} --data VAL_LIST --views 5x3")

"""What the training subcommands share: config from a preset or a resumed run, the progress bar,
the one-line start report. Only the CLI prints; library code logs."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mvm.config import Config, ConfigError, load_config

#: flag -> config key, for the flags every training subcommand takes.
RUN_FLAGS = {"data": "data.train", "val": "data.val", "out": "train.out", "steps": "train.steps",
             "format": "data.format", "root": "data.root"}


def add_run_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """``--config/--set`` plus ``--data --val --format --root --out --steps --resume --json``."""
    from mvm.cli import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--data", help="training data: list file, annotation file or folder of videos "
                                  "(none: the built-in synthetic set)")
    p.add_argument("--val", help=f"validation data for {what}")
    p.add_argument("--format", help="annotation format of --data/--val (default: detected)")
    p.add_argument("--root", help="folder the annotations' video paths are relative to "
                                  "(default: the annotation file's folder)")
    p.add_argument("--out", help="run folder (default: runs/<command>-<time>)")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out as it was configured (its config.toml), from its newest "
                        "good checkpoint; flags and --set given again override the saved values")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


def default_out(command: str, resume: bool) -> str:
    """``runs/<command>-<time>``; with ``resume``, the newest such folder."""
    if resume:
        runs = sorted(Path("runs").glob(f"{command}-*"))
        if runs:
            return str(runs[-1])
    return time.strftime(f"runs/{command}-%Y%m%d-%H%M%S")


def run_config(args: argparse.Namespace, command: str, default_preset: str,
               footage_preset: str | None = None, extra_flags: dict[str, str] | None = None) -> tuple[Config, str]:
    """The run's config and where it came from.

    A new run: ``--config`` (else ``footage_preset`` when ``--data`` is given, else
    ``default_preset``), then the flags, then ``--set``. A resumed run: the run folder's saved
    ``config.toml``, then only what the user passes again. Bad keys, values, or a resume with
    nothing to resume are refused here, before anything is written.
    """
    from mvm.train.checkpoint import latest_checkpoint

    flags = {**RUN_FLAGS, **(extra_flags or {})}
    overrides = [f"{key}={getattr(args, flag)}" for flag, key in flags.items()
                 if getattr(args, flag, None) is not None]
    overrides += list(args.overrides)
    named_out = [o.split("=", 1)[1].strip() for o in overrides if o.replace(" ", "").startswith("train.out=")]
    if args.resume:
        out = named_out[-1] if named_out else default_out(command, True)
        saved = Path(out) / "config.toml"
        if latest_checkpoint(out) is None:
            raise ConfigError(f"--resume: {out} holds no checkpoint to resume from "
                              "(start a new run without --resume, or name the run folder with --out)")
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} is missing, so the run's settings are unknown")
        if args.config:
            print(f"mvm {command}: --resume continues {out} with its saved config; --config {args.config} "
                  "is ignored (use --set to change a key)", file=sys.stderr)
        return load_config(str(saved), [f"train.out={out}", *overrides]), f"{saved} (resumed)"
    preset = args.config or (footage_preset if footage_preset and args.data else default_preset)
    if not named_out:
        overrides.insert(0, f"train.out={default_out(command, False)}")  # before --set, which may name one
    return load_config(preset, overrides), preset


def describe_run(cfg: Config, source: str) -> str:
    """The values a user wants to see before a run starts, in one short block."""
    d, m, k, o, t = cfg.data, cfg.model, cfg.mask, cfg.optim, cfg.train
    data = d.train or f"built-in synthetic set ({d.synth_dir})"
    return "\n".join([
        f"config      {source}",
        f"data        {data}{' (' + d.format + ')' if d.format else ''}; val {d.val or '-'}",
        f"clips       {d.frames} frames at stride {d.stride}, {d.size} px, flip {'on' if d.flip else 'off'}"
        f"{', repeat ' + str(d.repeat) if d.repeat > 1 else ''}",
        f"model       {m.name}, tubelet {m.tubelet}, patch {m.patch}",
        f"masks       {k.encoder} {k.ratio:g}, decoder {k.decoder}"
        f"{' ' + format(k.decoder_ratio, 'g') if k.decoder != 'none' else ''}",
        f"training    {t.steps} steps of {o.batch_size * o.accum_steps} clips, base lr {o.base_lr:g}, "
        f"target {t.target}{', motion weight ' + format(t.motion_weight, 'g') if t.motion_weight else ''}"
        f"{', bf16' if t.bf16 else ''}",
        f"run folder  {t.out}",
    ])


def is_main_rank() -> bool:
    """Under torchrun only rank 0 talks."""
    return os.environ.get("RANK", "0") == "0"


class ProgressBar:
    """A tqdm bar on stderr (rank 0 only), drawn from the loop's first report, so that a run refused
    before training starts prints its one-line error and no bar. Call it as the loop's progress."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.bar = total, desc, None

    def __call__(self, step: int, total: int, row: dict) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", dynamic_ncols=True, file=sys.stderr,
                            disable=not is_main_rank())
        self.bar.n = step
        post = {"loss": f"{row['loss']:.4f}", "lr": f"{row['lr']:.1e}", "clips_s": f"{row['clips_per_s']:.1f}"}
        if "data_wait" in row:
            post["wait"] = f"{row['data_wait']:.0%}"  # share of the time spent waiting for data
        self.bar.set_postfix(post)  # redraws the bar once

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_training(args: argparse.Namespace, command: str, cfg: Config, description: str,
                 train: Any, print_summary: Any) -> int:
    """What every training subcommand does once its config is made: print the run's key values,
    train with a progress bar, turn the errors a user can meet into one line, print the summary.

    Args:
        command: the words after ``mvm`` (``pretrain``, ``tokenizer train``...), for messages.
        description: the block printed before the run (see :func:`describe_run`).
        train: ``train(cfg, resume=..., progress=...) -> summary``.
        print_summary: prints a completed run's summary (a stopped one is handled here).

    Returns:
        0 done, 143 stopped by a signal (checkpoint written), 2 a checkpoint to start from that is
        no model, 1 a run that had to stop (too much bad data, repeated non-finite loss, a
        checkpoint that does not fit). Bad data sources raise on to ``mvm.cli`` (one line, rc 2).
    """
    from mvm.interop.load import InteropError
    from mvm.train.checkpoint import CheckpointError
    from mvm.train.guard import TooManyNonFinite, TooMuchBadData

    main = is_main_rank()
    if main:
        print(description, file=sys.stderr)
    bar = ProgressBar(cfg.train.steps, command.split()[0])
    try:
        summary = train(cfg, resume=args.resume, progress=bar)
    except (CheckpointError, InteropError, TooMuchBadData, TooManyNonFinite) as e:
        bar.close()
        print(f"mvm {command}: {e}", file=sys.stderr)
        return 2 if isinstance(e, InteropError) else 1
    bar.close()
    if not main:
        return 0
    if args.json:
        print(json.dumps(summary, indent=1))
    elif summary.get("stopped_by"):
        print(f"stopped by {summary['stopped_by']} at step {summary['steps']}; checkpoint {summary['checkpoint']}")
        print(f"continue with: mvm {command} --resume --out {summary['run_dir']}")
    else:
        print_summary(summary)
    return 0 if summary.get("stopped_by") is None else 143

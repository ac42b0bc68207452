"""Study runner: a grid of config values x seeds; each cell pretrained, probed and fine-tuned.

    python benchmarks/ablation.py --out studies/masks --vary mask.encoder=random,tube,smm,mgm \\
        --vary mask.ratio=0.75,0.9 --seeds 0 1 2 --jobs 2
    python benchmarks/ablation.py --out studies/gpu --vary mask.encoder=random,tube,smm,mgm --seeds 0 1 2 \\
        --device cuda --jobs 4 --set model.name=small --set data.frames=16 --set data.size=112 \\
        --set model.patch=16 --set train.motion_weight=0 --finetune-steps 300

Each cell (one value per ``--vary`` key, one seed) is ``mvm.train.pretrain.run_pretrain`` (its
summary carries the kNN and linear probes, pretrained and random init) then, unless
``--finetune-steps 0``, ``mvm finetune --init RUN`` with a fixed recipe (``--finetune-config``).
Every run sees the same data (prepared once, before any cell starts), steps and optimiser; only
the varied keys and the seed change. Each cell runs in its own process (``--jobs`` at a time) and
its row is appended to ``OUT/results.jsonl`` as soon as it finishes, so an interrupted study started
again with the same command skips the cells already there (a cell whose pretraining finished is not
pretrained again). At the end ``OUT/table.md`` (mean +- sample std over seeds, n) and
``OUT/plot.png`` (mean and spread per value, one point per seed) are written, and the table printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

#: (summary key, column title) in table order; fine-tuning keys come from ``mvm finetune --json``.
METRICS = (("knn_top1", "kNN"), ("linear_top1", "linear"), ("ft_top1", "fine-tune"),
           ("knn_top1_random", "kNN, random init"), ("linear_top1_random", "linear, random init"),
           ("final_loss", "final loss"))
PERCENT = {"knn_top1", "linear_top1", "ft_top1", "knn_top1_random", "linear_top1_random"}


# ------------------------------------------------------------------------------------------------
# The grid and its bookkeeping (pure functions, unit-tested)


def parse_vary(specs: list[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c.d=x"]`` -> ``{"a.b": ["1", "2"], "c.d": ["x"]}``; a bad spec raises ValueError."""
    out: dict[str, list[str]] = {}
    for spec in specs:
        key, _, values = spec.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if "." not in key or not vals:
            raise ValueError(f"--vary {spec!r}: expected section.key=v1,v2,...")
        if key in out:
            raise ValueError(f"--vary {key} given twice")
        out[key] = vals
    return out


def cells(vary: dict[str, list[str]], seeds: list[int]) -> list[dict[str, Any]]:
    """Every combination of the varied values, times every seed: ``{"values": {...}, "seed": s}``."""
    keys = list(vary)
    return [{"values": dict(zip(keys, combo, strict=True)), "seed": seed}
            for combo in itertools.product(*(vary[k] for k in keys)) for seed in seeds]


def cell_name(cell: dict[str, Any]) -> str:
    """A folder name for the cell: ``mask.encoder=mgm_mask.ratio=0.9_s1``."""
    return "_".join(f"{k}={v}" for k, v in cell["values"].items()) + f"_s{cell['seed']}"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a results file; a line cut short by a kill is skipped (its cell is run again)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def pending(all_cells: list[dict[str, Any]], rows: list[dict[str, Any]], settings: dict[str, Any],
            where: str = "results") -> list[dict[str, Any]]:
    """The cells not yet in ``rows`` with status ok. Rows of another study (other settings) refuse."""
    done = set()
    for row in rows:
        if row.get("settings") != settings:
            raise ValueError(f"{where} holds rows of another study (settings {row.get('settings')}, this one "
                             f"{settings}): use another --out folder")
        if row.get("status") == "ok":
            done.add(cell_name(row))
    return [c for c in all_cells if cell_name(c) not in done]


def aggregate(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Per combination of ``keys``' values (in first-seen order): per metric the mean, the sample
    std over seeds (0 for one seed) and the per-seed values; failed rows are left out."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") == "ok":
            groups.setdefault(tuple(row["values"][k] for k in keys), []).append(row)
    out = []
    for combo, members in groups.items():
        members.sort(key=lambda r: r["seed"])
        entry: dict[str, Any] = {"values": dict(zip(keys, combo, strict=True)),
                                 "seeds": [r["seed"] for r in members], "metrics": {}}
        for metric, _ in METRICS:
            xs = [float(r[metric]) for r in members if r.get(metric) is not None]
            if xs:
                entry["metrics"][metric] = {"mean": statistics.fmean(xs),
                                            "std": statistics.stdev(xs) if len(xs) > 1 else 0.0, "per_seed": xs}
        out.append(entry)
    return out


def markdown_table(summary: list[dict[str, Any]], keys: list[str]) -> str:
    """Mean +- sample std (n seeds) per cell; accuracies in %."""
    shown = [(m, title) for m, title in METRICS if any(m in e["metrics"] for e in summary)]
    lines = ["| " + " | ".join([*keys, "seeds", *(t for _, t in shown)]) + " |",
             "|" + "---|" * (len(keys) + 1 + len(shown))]
    for e in summary:
        cells_ = [str(e["values"][k]) for k in keys] + [str(len(e["seeds"]))]
        for m, _ in shown:
            s = e["metrics"].get(m)
            if s is None:
                cells_.append("-")
            elif m in PERCENT:
                cells_.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}")
            else:
                cells_.append(f"{s['mean']:.4f} ± {s['std']:.4f}")
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict[str, Any]], keys: list[str], out: Path, title: str = "") -> Path:
    """One panel per accuracy: per cell the mean with a +-std bar, and one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(m, t) for m, t in METRICS if m in PERCENT and not m.endswith("_random")
             and any(m in e["metrics"] for e in summary)]
    labels = ["\n".join(str(e["values"][k]) for k in keys) for e in summary]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(max(4.0, 0.9 * len(summary) + 1.5) * len(shown), 3.8),
                             squeeze=False)
    for ax, (m, t) in zip(axes[0], shown, strict=False):
        for i, e in enumerate(summary):
            s = e["metrics"].get(m)
            if s is None:
                continue
            n = len(s["per_seed"])
            jitter = [i + 0.12 * (k - (n - 1) / 2) for k in range(n)]  # seeds side by side
            ax.scatter(jitter, [100 * v for v in s["per_seed"]], s=14, color="gray", zorder=3)
            ax.errorbar([i], [100 * s["mean"]], yerr=[100 * s["std"]], fmt="o", color="C0", capsize=5,
                        markersize=7, zorder=4)
            rnd = e["metrics"].get(m.replace("_top1", "_top1_random"))
            if rnd is not None:
                ax.plot([i - 0.3, i + 0.3], [100 * rnd["mean"]] * 2, color="C3", linewidth=1)
        ax.set_xticks(range(len(summary)), labels, fontsize=8)
        ax.set_xlim(-0.6, len(summary) - 0.4)
        ax.set_title(f"{t} top-1 (%)" + (" - red: random init" if m != "ft_top1" else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"mean ± std over seeds; dots: seeds ({', '.join(keys)})", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------
# Running one cell (in its own process) and the study


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Pretrain (resuming or reusing a run left by an interrupted study), then fine-tune; the row."""
    import logging

    from mvm.config import load_config
    from mvm.train.checkpoint import latest_checkpoint
    from mvm.train.pretrain import run_pretrain

    logging.basicConfig(level=logging.WARNING)
    cell, run_dir = spec["cell"], Path(spec["dir"]) / "pretrain"
    t0 = time.perf_counter()
    cfg = load_config(spec["config"], [*spec["overrides"], *(f"{k}={v}" for k, v in cell["values"].items()),
                                       f"train.seed={cell['seed']}", f"train.out={run_dir}"])
    if (run_dir / "summary.json").is_file() and latest_checkpoint(run_dir) is not None:
        summary = json.loads((run_dir / "summary.json").read_text())  # finished before an interruption
    else:
        summary = run_pretrain(cfg, resume=latest_checkpoint(run_dir) is not None)
    row = {**cell, "status": "ok", **{m: summary.get(m) for m, _ in METRICS if m in summary},
           "pretrain_seconds": round(time.perf_counter() - t0, 1)}
    if spec["finetune_steps"] > 0:
        t1 = time.perf_counter()
        ft = finetune(spec, run_dir, Path(spec["dir"]) / "finetune", cell["seed"])
        row.update(ft_top1=ft.get("val_top1"), ft_best_top1=ft.get("best_val_top1"),
                   finetune_seconds=round(time.perf_counter() - t1, 1))
    return row


def finetune(spec: dict[str, Any], init: Path, out: Path, seed: int) -> dict[str, Any]:
    """``mvm finetune --init`` in a subprocess (its summary, reused if an earlier attempt finished)."""
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    cmd = [sys.executable, "-m", "mvm.cli", "finetune", "--init", str(init), "--config", spec["finetune_config"],
           "--data", spec["train"], "--val", spec["val"], "--out", str(out), "--steps", str(spec["finetune_steps"]),
           "--json", "--set", f"train.seed={seed}", *(a for o in spec["finetune_overrides"] for a in ("--set", o))]
    if any(out.glob("ckpt-*")):
        cmd.append("--resume")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mvm finetune exited {done.returncode}: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout[done.stdout.index("{"):])


def _child(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        row = run_cell(spec)
    except Exception as e:  # one failed cell must not stop the study: its row says why
        row = {**spec["cell"], "status": "failed", "error": f"{type(e).__name__}: {e}"[-1000:]}
    print("ROW " + json.dumps(row), flush=True)
    return 0


def launch(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """One cell in a fresh Python process (isolated memory, threads and data-loader workers)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log = Path(spec["dir"]) / "log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                              stderr=fh, text=True, env=env)
    rows = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if not rows:
        return {**spec["cell"], "status": "failed", "error": f"process exited {done.returncode}; see {log}"}
    return json.loads(rows[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help="study folder: results.jsonl, table.md, plot.png, runs/ (default: "
                                  "studies/<varied keys>, so the same command resumes)")
    ap.add_argument("--vary", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                    help="a config key and its values; repeat for a grid")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--config", default="tiny-synthetic", help="pretraining preset (default tiny-synthetic)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override for every pretraining run (repeatable)")
    ap.add_argument("--steps", type=int, help="pretraining steps (default: the preset's)")
    ap.add_argument("--finetune-steps", type=int, default=200, help="fine-tuning steps per cell; 0: no fine-tuning")
    ap.add_argument("--finetune-config", default="ft-synthetic", help="fine-tuning preset (default ft-synthetic)")
    ap.add_argument("--finetune-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override for every fine-tuning run (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="cells run at once, each in its own process")
    ap.add_argument("--threads", type=int, help="torch threads per cell (default: cores / jobs)")
    ap.add_argument("--device", help="train.device for every run (cpu, cuda, cuda:1, ...)")
    args = ap.parse_args(argv)
    if args.child:
        return _child(args.child)
    if not args.vary:
        ap.error("at least one --vary section.key=v1,v2,... is needed")
    args.out = args.out or str(Path("studies") / "+".join(v.partition("=")[0] for v in args.vary))
    return study(args)


def study(args: argparse.Namespace) -> int:
    from mvm.config import ConfigError, load_config
    from mvm.train.pretrain import prepare_data_paths

    out = Path(args.out)
    try:
        vary = parse_vary(args.vary)
        common = [*args.overrides, *([f"train.steps={args.steps}"] if args.steps else []),
                  *([f"train.device={args.device}"] if args.device else [])]
        for cell in cells(vary, args.seeds[:1]):  # every value must be a valid config before any work
            load_config(args.config, [*common, *(f"{k}={v}" for k, v in cell["values"].items())])
        base = load_config(args.config, common)
    except (ValueError, ConfigError) as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 2
    prepare_data_paths(base)  # the synthetic set once, before parallel cells could race to make it
    ft_over = [*args.finetune_set, *([f"train.device={args.device}"] if args.device else [])]
    settings = {"config": args.config, "overrides": common, "finetune_steps": args.finetune_steps,
                "finetune_config": args.finetune_config, "finetune_overrides": ft_over}
    results = out / "results.jsonl"
    grid = cells(vary, args.seeds)
    try:
        todo = pending(grid, read_rows(results), settings, str(results))
    except ValueError as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 2
    print(f"{len(grid)} cells, {len(grid) - len(todo)} already in {results}, {len(todo)} to run, "
          f"{args.jobs} at a time", file=sys.stderr)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    data = [f"data.train={base.data.train}", f"data.val={base.data.val}"]
    specs = [{"cell": c, "dir": str(out / "runs" / cell_name(c)), "config": args.config,
              "overrides": [*common, *data, f"train.threads={threads}"], "finetune_steps": args.finetune_steps,
              "finetune_config": args.finetune_config, "finetune_overrides": [*ft_over, f"train.threads={threads}"],
              "train": base.data.train, "val": base.data.val} for c in todo]
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(launch, s, threads) for s in specs]
        for fut in as_completed(futures):
            row = {**fut.result(), "settings": settings}
            with open(results, "a") as fh:  # one writer (this thread), one line per finished cell
                fh.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
    rows = read_rows(results)
    failed = [r for r in rows if r.get("status") != "ok" and cell_name(r) not in
              {cell_name(x) for x in rows if x.get("status") == "ok"}]
    summary = aggregate(rows, list(vary))
    table = markdown_table(summary, list(vary))
    (out / "table.md").write_text(table)
    (out / "summary.json").write_text(json.dumps({"settings": settings, "cells": summary}, indent=1))
    plot(summary, list(vary), out / "plot.png")
    print(table)
    print(f"table: {out / 'table.md'}, plot: {out / 'plot.png'}" +
          (f"; {len(failed)} cell(s) failed (rerun the command to retry): " +
           "; ".join(f"{cell_name(r)}: {r.get('error')}" for r in failed) if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Does pretraining pay downstream? Fine-tune the encoder `make run` pretrains vs the same model from scratch.

For each seed: `mvm pretrain` with its defaults (the main job, tiny-synthetic) and `train.seed=SEED`
(or an existing run folder), then `mvm finetune --init RUN` and `mvm finetune` from scratch with the
same preset (ft-synthetic), steps, data and seed. Prints JSON: validation top-1 (final and best) of
both, per seed, and the mean gap.

    python benchmarks/finetune_gain.py --seeds 0 1 --steps 400 [--workers 8] [--out runs/gain]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def mvm(*args: str) -> dict:
    """Run one mvm command with --json; its summary."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "mvm.cli", *args, "--json"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if p.returncode != 0:
        raise SystemExit(f"mvm {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout[p.stdout.index("{"):])
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps (both arms)")
    ap.add_argument("--workers", type=int, default=2, help="decoding processes (do not change the numbers)")
    ap.add_argument("--out", default="runs/gain")
    ap.add_argument("--pretrained", nargs="*", default=[], help="existing pretraining run folders, one per seed")
    args = ap.parse_args()
    out = Path(args.out)
    workers = f"data.workers={args.workers}"
    rows = []
    for i, seed in enumerate(args.seeds):
        pre = Path(args.pretrained[i]) if i < len(args.pretrained) else out / f"pretrain-s{seed}"
        pre_summary = None
        if not (pre / "summary.json").is_file():
            pre_summary = mvm("pretrain", "--out", str(pre), "--set", f"train.seed={seed}", "--set", workers)
        common = ["--steps", str(args.steps), "--set", f"train.seed={seed}", "--set", workers]
        ft = mvm("finetune", "--init", str(pre), "--out", str(out / f"ft-pretrained-s{seed}"), *common)
        scratch = mvm("finetune", "--out", str(out / f"ft-scratch-s{seed}"), *common)
        rows.append({"seed": seed, "pretrain_run": str(pre),
                     "pretrain_seconds": pre_summary["seconds"] if pre_summary else None,
                     "pretrained": {k: ft.get(k) for k in ("val_top1", "best_val_top1", "final_loss", "seconds")},
                     "scratch": {k: scratch.get(k) for k in ("val_top1", "best_val_top1", "final_loss", "seconds")}})
    gap = [r["pretrained"]["val_top1"] - r["scratch"]["val_top1"] for r in rows]
    best_gap = [r["pretrained"]["best_val_top1"] - r["scratch"]["best_val_top1"] for r in rows]
    print(json.dumps({"steps": args.steps, "seeds": rows, "mean_gap_final_top1": sum(gap) / len(gap),
                      "mean_gap_best_top1": sum(best_gap) / len(best_gap)}, indent=1))


if __name__ == "__main__":
    main()

"""Ablations in miniature: pretrain the tiny preset once per value of one config key and per seed,
then kNN and linear probes on the synthetic motion classes. Prints one JSON line per run, then a
JSON summary (mean and population std over seeds).

    python benchmarks/ablation.py --vary train.motion_weight=0,1 --seeds 0 1
    python benchmarks/ablation.py --vary mask.encoder=random,tube,smm,mgm --steps 300 --set mask.ratio=0.9

Every run uses the same data, steps and optimiser; only the varied key and the seed change.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from mvm.config import load_config
from mvm.train.pretrain import run_pretrain

METRICS = ("knn_top1", "knn_top1_random", "linear_top1", "linear_top1_random", "final_loss")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vary", required=True, help="section.key=v1,v2,... (one run per value)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's")
    ap.add_argument("--config", default="tiny-synthetic")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", default=None, help="where runs go (default: a temporary folder)")
    args = ap.parse_args()
    key, _, values = args.vary.partition("=")
    if not values:
        ap.error("--vary needs section.key=v1,v2,...")
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.out or tempfile.mkdtemp(prefix="mvm-ablation-"))
    steps = [f"train.steps={args.steps}"] if args.steps else []
    runs: list[dict] = []
    for value in values.split(","):
        for seed in args.seeds:
            t0 = time.perf_counter()
            cfg = load_config(args.config, [*args.overrides, *steps, f"{key}={value}", f"train.seed={seed}",
                                            f"train.out={root / f'{key}={value}-s{seed}'}"])
            s = run_pretrain(cfg)
            runs.append({key: value, "seed": seed, **{m: s.get(m) for m in METRICS},
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(runs[-1]), flush=True)
    table = {}
    for value in values.split(","):
        rows = [r for r in runs if r[key] == value]
        table[value] = {m: {"mean": statistics.mean(r[m] for r in rows), "std": statistics.pstdev(r[m] for r in rows)}
                        for m in METRICS if all(r[m] is not None for r in rows)}
    print(json.dumps({"vary": key, "seeds": args.seeds, "overrides": args.overrides, "summary": table,
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()

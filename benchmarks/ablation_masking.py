"""Masking ablation in miniature: pretrain the tiny model with each encoder mask, several seeds,
then kNN and linear probes on the synthetic motion classes. Prints one JSON object.

    python benchmarks/ablation_masking.py --steps 300 --seeds 0 1 2 --strategies random tube smm mgm

Every run uses the same data, ratio, steps and optimiser; only the encoder mask and the seed change.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", nargs="+", default=["random", "tube", "smm", "mgm"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    ap.add_argument("--out", default=None, help="where runs go (default: a temporary folder)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(args.out or tempfile.mkdtemp(prefix="mvm-ablation-"))
    runs: list[dict] = []
    for strategy in args.strategies:
        for seed in args.seeds:
            t0 = time.perf_counter()
            cfg = load_config("tiny-synthetic", [
                f"mask.encoder={strategy}", f"mask.ratio={args.ratio}", f"train.seed={seed}",
                f"train.steps={args.steps}", f"train.out={root / f'{strategy}-s{seed}'}", *args.overrides])
            s = run_pretrain(cfg)
            runs.append({"strategy": strategy, "seed": seed, "knn_top1": s["knn_top1"],
                         "linear_top1": s["linear_top1"], "final_loss": s["final_loss"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(runs[-1]), flush=True)
    table = {}
    for strategy in args.strategies:
        rows = [r for r in runs if r["strategy"] == strategy]
        table[strategy] = {m: {"mean": statistics.mean(r[m] for r in rows),
                               "std": statistics.pstdev(r[m] for r in rows)} for m in ("knn_top1", "linear_top1")}
    print(json.dumps({"steps": args.steps, "ratio": args.ratio, "seeds": args.seeds, "summary": table,
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()

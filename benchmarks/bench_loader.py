"""Training-data throughput with and without the decode cache (``data.cache_mb``). Prints JSON.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_loader.py --epochs 3

Loads the main job's synthetic set (generated if absent) through the training DataLoader, motion
included as the main job reads it, for a few epochs, once with ``cache_mb = 0`` and once with the
preset's cache, interleaved ``--repeats`` times; reports clips/s per epoch (the first epoch of a
cached run pays every decode, later ones hit).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mvm.config import load_config
from mvm.grid import TokenGrid
from mvm.train.pretrain import build_loader, prepare_data_paths


def epochs_per_second(overrides: list[str], epochs: int) -> list[float]:
    cfg = load_config("tiny-synthetic", overrides)
    prepare_data_paths(cfg)
    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    dataset, loader = build_loader(cfg, grid, start_sample=0)
    per_epoch = len(dataset) // cfg.optim.batch_size
    batches, rates = iter(loader), []
    for _ in range(epochs):
        t0 = time.perf_counter()
        clips = sum(next(batches)["video"].shape[0] for _ in range(per_epoch))
        rates.append(round(clips / (time.perf_counter() - t0), 1))
    del batches, loader
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cached_mb = load_config("tiny-synthetic", args.overrides).data.cache_mb
    results: dict[str, list[list[float]]] = {"no_cache": [], f"cache_{cached_mb:g}mb": []}
    for _ in range(args.repeats):
        results["no_cache"].append(epochs_per_second([*args.overrides, "data.cache_mb=0"], args.epochs))
        results[f"cache_{cached_mb:g}mb"].append(epochs_per_second(args.overrides, args.epochs))
    best = {k: [max(r[e] for r in v) for e in range(args.epochs)] for k, v in results.items()}
    plain, cached = best.values()
    print(json.dumps({"clips_per_s_per_epoch": results, "best_per_epoch": best,
                      "ratio_after_first_epoch": round(cached[-1] / plain[-1], 2)}, indent=1))


if __name__ == "__main__":
    main()

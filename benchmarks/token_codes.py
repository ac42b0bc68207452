"""How predictable are a tokenizer's codes? Prints JSON.

    PYTHONPATH=src python benchmarks/token_codes.py RUN_DIR          # a `mvm tokenizer train` run folder

Over the run's validation clips (centre view): per FSQ level, the uniform cross-entropy, the
codes' marginal entropy (what a predictor that knows only code frequencies reaches), and the
entropy given the code at the same place one time slice earlier (a lower bound on what
context can give). A token-target MAE whose loss stays at the marginal entropy has learned
little beyond frequencies (docs/lvmae.md, ablation).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter

import torch

from mvm.data.datasets import VideoDataset
from mvm.grid import TokenGrid
from mvm.tokenizer.lvmae import load_tokenizer


def entropy(counts: Counter) -> float:
    """Entropy in nats of a histogram."""
    n = sum(counts.values())
    return -sum(c / n * math.log(c / n) for c in counts.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="tokenizer run folder")
    p.add_argument("--clips", type=int, default=0, help="validation clips to use (0: all)")
    a = p.parse_args()
    tok, cfg = load_tokenizer(a.run, torch.device("cpu"))
    grid = TokenGrid.from_clip(cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch)
    ds = VideoDataset(cfg.data.val, grid, cfg.data, train=False)
    n = len(ds) if a.clips <= 0 else min(a.clips, len(ds))
    digits = []
    with torch.no_grad():
        for i in range(n):
            codes, _ = tok.tokenize(ds[i]["video"][None].float())
            digits.append(tok.quantizer.digits(codes)[0])  # [N, levels]
    d = torch.stack(digits).view(n, *grid.shape, -1)  # [clips, t, h, w, levels]
    marginal, given_prev = [], []
    for i in range(d.shape[-1]):
        cur, prev = d[:, 1:, ..., i].flatten().tolist(), d[:, :-1, ..., i].flatten().tolist()
        marginal.append(entropy(Counter(d[..., i].flatten().tolist())))
        given_prev.append(entropy(Counter(zip(cur, prev))) - entropy(Counter(prev)))
    m = len(marginal)
    print(json.dumps({"run": a.run, "clips": n, "grid": list(grid.shape), "levels": list(tok.levels),
                      "uniform_nats": [round(math.log(v), 3) for v in tok.levels],
                      "uniform_mean": round(sum(math.log(v) for v in tok.levels) / m, 3),
                      "marginal_nats": [round(x, 3) for x in marginal], "marginal_mean": round(sum(marginal) / m, 3),
                      "given_previous_slice_nats": [round(x, 3) for x in given_prev],
                      "given_previous_slice_mean": round(sum(given_prev) / m, 3),
                      "distinct_codes": len(Counter(tuple(r) for r in d.reshape(-1, m).tolist()))}, indent=1))


if __name__ == "__main__":
    main()

"""What does the pixel loss itself want the top-k to keep? A greedy oracle against the scorer. JSON.

    PYTHONPATH=src python benchmarks/scorer_oracle.py RUN_DIR [--clips 16] [--threads 1] [--method greedy|marginal]

For each validation clip (with object masks) of a ``mvm tokenizer train`` run, with the run's own
frozen decoder: build a k-token selection greedily, each time adding the token whose keeping
lowers the clip's pixel MSE the most (every remaining token tried, batched). That selection is
what a scorer could at best learn from the first-order signal the straight-through top-k gives
(it is not the optimum over all k-subsets, but it is what "the tokens that matter for the pixel
loss" means with this decoder). ``--method marginal`` is the cheap variant (N decodes a clip instead
of about k x N): each token's value at the scorer's own top-k, i.e. how much the error rises when a
kept token is dropped or falls when a dropped one is added (one swap, the signal the straight-through
gradient estimates), and the k most valuable tokens. Reported next to the scorer's top-k and k random tokens: PSNR and
the share of object pixels in the kept tokens over the clip's share (``*_object_ratio``), plus the
ceiling (the k tokens with the most object pixels).

If the greedy selection prefers the object no more than the scorer does, the objective (pixel
MSE with this decoder, on this data) does not ask for the object, and no scorer trick will show
"the top-k falls on the moving object"; if it prefers it far more, the scorer is what falls short.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mvm.tokenizer.evaluate import read_clip, to_pixels, token_object_share
from mvm.tokenizer.lvmae import load_tokenizer
from mvm.tokenizer.topk import topk_mask


@torch.no_grad()
def greedy_selection(tok, zq: torch.Tensor, target: torch.Tensor, cfg, k: int, chunk: int = 64) -> torch.Tensor:
    """``zq`` ``[1, D, t, h, w]``, ``target`` ``[1, 3, T, H, W]`` pixels -> ``[N]`` bool, ``k`` tokens
    chosen greedily by the drop in pixel MSE of the decoder's reconstruction."""
    n = zq.shape[2] * zq.shape[3] * zq.shape[4]
    keep = torch.zeros(n, dtype=torch.bool)
    for _ in range(k):
        cand = (~keep).nonzero().flatten()
        errs = []
        for part in cand.split(chunk):
            masks = keep.float().repeat(len(part), 1)
            masks[torch.arange(len(part)), part] = 1.0
            rec = to_pixels(tok.decode(zq.expand(len(part), -1, -1, -1, -1), masks), cfg)
            errs.append((rec - target).pow(2).flatten(1).mean(1))
        keep[cand[torch.cat(errs).argmin()]] = True
    return keep


@torch.no_grad()
def marginal_selection(tok, zq: torch.Tensor, target: torch.Tensor, cfg, keep: torch.Tensor, k: int,
                       chunk: int = 64) -> torch.Tensor:
    """``[N]`` bool: the ``k`` tokens whose single swap at the selection ``keep`` (``[N]`` bool)
    changes the pixel MSE the most (removal cost for kept tokens, addition gain for the others)."""
    n = keep.numel()
    base = float((to_pixels(tok.decode(zq, keep.float()[None]), cfg) - target).pow(2).mean())
    value = torch.empty(n)
    for part in torch.arange(n).split(chunk):
        masks = keep.float().repeat(len(part), 1)
        masks[torch.arange(len(part)), part] = 1.0 - masks[torch.arange(len(part)), part]  # swap one
        rec = to_pixels(tok.decode(zq.expand(len(part), -1, -1, -1, -1), masks), cfg)
        err = (rec - target).pow(2).flatten(1).mean(1)
        value[part] = torch.where(keep[part], err - base, base - err)
    return topk_mask(value[None], k)[0].bool()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="tokenizer run folder")
    p.add_argument("--clips", type=int, default=16, help="validation clips (the first ones)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--method", choices=("greedy", "marginal"), default="greedy",
                   help="oracle: greedy selection (k x N decodes a clip) or one-swap values at the top-k (N)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok, cfg = load_tokenizer(a.run, torch.device("cpu"))
    from mvm.data.formats import open_source

    paths = [e.path for e in open_source(cfg.data.val, cfg.data.format, cfg.data.root).entries]
    gen = torch.Generator().manual_seed(0)
    sums: dict[str, float] = {}
    t0, used = time.perf_counter(), 0
    for path in paths:
        if used >= a.clips:
            break
        clip = read_clip(path, cfg)
        if clip.mask is None:
            continue
        used += 1
        video = clip.video[None]
        target = to_pixels(video, cfg)
        h = tok.encode(video)
        zq, _, _ = tok.quantizer(h)
        scores = tok.score(h)
        n = scores.shape[1]
        k = max(1, int(round(cfg.tokenizer.budget * n)))
        share = token_object_share(clip.mask, tok.tubelet, tok.patch)
        frame = float(clip.mask.float().mean())
        top = topk_mask(scores, k)[0].bool()
        sels = {"topk": top, "random": topk_mask(torch.rand(1, n, generator=gen), k)[0].bool(),
                a.method: greedy_selection(tok, zq, target, cfg, k) if a.method == "greedy"
                else marginal_selection(tok, zq, target, cfg, top, k),
                "ceiling": topk_mask(share[None] + 1e-6 * torch.rand(1, n, generator=gen), k)[0].bool()}
        for name, sel in sels.items():
            rec = to_pixels(tok.decode(zq, sel.float()[None]), cfg)
            mse = float((rec - target).pow(2).mean())
            sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + (-10.0 * torch.log10(torch.tensor(mse))).item()
            sums[f"{name}_object_ratio"] = sums.get(f"{name}_object_ratio", 0.0) + float(share[sel].mean()) / frame
        g = sels[a.method]
        sums[f"{a.method}_topk_overlap"] = sums.get(f"{a.method}_topk_overlap", 0.0) + float((g & top).sum()) / k
    out = {key: round(v / max(used, 1), 4) for key, v in sums.items()}
    out.update(run=a.run, method=a.method, clips=used, k=k, tokens=n, seconds=round(time.perf_counter() - t0, 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

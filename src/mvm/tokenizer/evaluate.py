"""What a trained tokenizer is judged on: PSNR from all / top-k / random-k tokens, and whether the
top-k falls on the moving object (synthetic clips written with ``--object-masks``).

Validation clips are read here rather than through the training dataset so the object mask can be
cut exactly like the frames: the first ``data.frames`` frames at ``data.stride``, centre square,
resized to ``data.size`` (nearest for the mask).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mvm.config import Config
from mvm.tokenizer.model import VideoTokenizer
from mvm.tokenizer.topk import topk_mask

log = logging.getLogger(__name__)


@dataclass
class EvalClip:
    """One validation clip: ``video`` ``[3, T, S, S]`` normalised, ``mask`` ``[T, S, S]`` bool or None."""

    path: str
    video: torch.Tensor
    mask: torch.Tensor | None


def read_clip(path: str, cfg: Config) -> EvalClip:
    """The first clip of ``path`` as the tokenizer sees it, with its object mask when one was written."""
    from mvm.data.synth import load_object_mask
    from mvm.data.video_io import decode_video

    d = cfg.data
    decoded = decode_video(path, max_frames=(d.frames - 1) * d.stride + 1)
    idx = np.minimum(np.arange(d.frames) * d.stride, decoded.num_frames - 1)
    frames = torch.from_numpy(decoded.frames[idx]).permute(3, 0, 1, 2).float() / 255.0  # [3, T, H, W]
    try:
        full = load_object_mask(path)
        mask = torch.from_numpy(full[np.minimum(idx, len(full) - 1)])
    except FileNotFoundError:
        mask = None
    h, w = frames.shape[-2:]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    frames = frames[..., y0:y0 + side, x0:x0 + side]
    if side != d.size:
        frames = F.interpolate(frames, size=(d.size, d.size), mode="bilinear", align_corners=False,
                               antialias=True)
    if mask is not None:
        mask = mask[:, y0:y0 + side, x0:x0 + side]
        if side != d.size:
            mask = F.interpolate(mask[None].float(), size=(d.size, d.size), mode="nearest")[0] > 0.5
    mean = torch.tensor(d.mean).view(3, 1, 1, 1)
    std = torch.tensor(d.std).view(3, 1, 1, 1)
    return EvalClip(path, (frames - mean) / std, mask)


def mean_std(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip normalisation's mean and std as ``[1, 3, 1, 1, 1]`` float32 on ``device``: made once
    per device and values (a step then copies nothing to the device), shared, never modified."""
    return _mean_std(tuple(cfg.data.mean), tuple(cfg.data.std), torch.device(device))


@functools.lru_cache(maxsize=8)
def _mean_std(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1, 1).to(device, non_blocking=True)
                 for v in (mean, std))


def to_pixels(video: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Normalised ``[B, 3, T, H, W]`` -> pixels in [0, 1] (clamped), float32."""
    mean, std = mean_std(cfg, video.device)
    return (video.float() * std + mean).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per clip PSNR in dB of pixel clips in [0, 1]: ``[B, ...]`` x2 -> ``[B]``."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def token_object_share(mask: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Share of object pixels in each token: ``[T, S, S]`` bool -> ``[N]`` float in (t, h, w) order."""
    m = mask.float()[None, None]
    return F.avg_pool3d(m, (tubelet, patch, patch)).flatten()


@torch.no_grad()
def reconstruct(model: VideoTokenizer, video: torch.Tensor, k: int, generator: torch.Generator
                ) -> dict[str, torch.Tensor]:
    """Reconstructions of ``[B, 3, T, H, W]`` from all tokens, the top-k and ``k`` random tokens,
    with the scores and the top-k mask (``[B, N]``)."""
    h = model.encode(video)
    zq, codes, _ = model.quantizer(h)
    scores = model.score(h)
    top = topk_mask(scores, k)
    rand = topk_mask(torch.rand(scores.shape, generator=generator).to(scores.device), k)
    return {"all": model.decode(zq), "topk": model.decode(zq, top), "random": model.decode(zq, rand),
            "scores": scores, "keep": top, "codes": codes}


@torch.no_grad()
def evaluate_tokenizer(model: VideoTokenizer, clips: list[EvalClip], cfg: Config, device: torch.device,
                       batch: int = 8) -> dict[str, float]:
    """PSNR (dB, mean over clips) from all tokens, the top-k and k random tokens; with object masks,
    the share of object pixels inside the top-k tokens vs inside random-k tokens and in the clip.

    Returns keys ``psnr_all``, ``psnr_topk``, ``psnr_random``, ``topk_places`` / ``random_places``
    (share of the frame's h x w token places that the top-k / random-k keep at least once, at any
    time: how much of the frame the budget covers), and with masks ``object_share``,
    ``topk_object_share``, ``random_object_share``, ``topk_on_object`` (share of top-k tokens
    touching the object), ``tokens_on_object`` (share of all tokens touching it) and
    ``oracle_object_share`` (the most a k-token selection could hold: the k tokens with the most
    object pixels; the ceiling of ``topk_object_share`` at this budget, not a model figure).
    """
    model.eval()
    gen = torch.Generator().manual_seed(cfg.train.seed + 7)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(key: str, values: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.sum())
        counts[key] = counts.get(key, 0) + values.numel()

    for i in range(0, len(clips), batch):
        part = clips[i:i + batch]
        video = torch.stack([c.video for c in part]).to(device)
        n = model.grid_for(video).num_tokens
        k = max(1, int(round(cfg.tokenizer.budget * n)))
        out = reconstruct(model, video, k, gen)
        target = to_pixels(video, cfg)
        for name in ("all", "topk", "random"):
            add(f"psnr_{name}", psnr(to_pixels(out[name], cfg), target).cpu())
        rand_keep = topk_mask(torch.rand(out["scores"].shape, generator=gen), k)
        places = (video.shape[-2] // model.patch) * (video.shape[-1] // model.patch)
        for name, keep in (("topk", out["keep"].cpu()), ("random", rand_keep)):
            add(f"{name}_places", keep.view(len(part), -1, places).amax(1).mean(1))
        for j, c in enumerate(part):
            if c.mask is None:
                continue
            share = token_object_share(c.mask, model.tubelet, model.patch)
            top = out["keep"][j].cpu().bool()
            add("object_share", c.mask.float().mean().view(1))
            add("topk_object_share", share[top].mean().view(1))
            add("random_object_share", share[rand_keep[j].bool()].mean().view(1))
            add("topk_on_object", (share[top] > 0).float().mean().view(1))
            add("tokens_on_object", (share > 0).float().mean().view(1))
            add("oracle_object_share", share.topk(k).values.mean().view(1))
    result = {k: sums[k] / counts[k] for k in sums}
    if "object_share" in result:
        result["topk_object_ratio"] = result["topk_object_share"] / max(result["object_share"], 1e-9)
        result["oracle_object_ratio"] = result["oracle_object_share"] / max(result["object_share"], 1e-9)
    return {k: (round(v, 4) if math.isfinite(v) else v) for k, v in result.items()}

"""Masks drawn batch-wise in the collate step (as dinov2 does), reproducible per batch.

The generator of a batch is seeded from ``(seed, the batch's sample indices)``: the same samples
get the same masks whatever the number of DataLoader workers, the worker that builds the batch,
or whether the run was resumed.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import numpy as np
import torch

from mvm.grid import TokenGrid
from mvm.masking.base import DECODER_MASKS, ENCODER_MASKS, MaskContext, MaskStrategy

log = logging.getLogger(__name__)


def build_masks(mask_cfg: Any) -> tuple[MaskStrategy, MaskStrategy]:
    """``(encoder_strategy, decoder_strategy)`` from a :class:`mvm.config.MaskConfig`.

    ``motion_share`` goes to encoder strategies that take it (smm, mgm); ``decoder_ratio`` is the
    decoder's ``ratio``.
    """
    enc_cls = ENCODER_MASKS.get(mask_cfg.encoder)
    kwargs: dict[str, Any] = {"ratio": mask_cfg.ratio}
    if "motion_share" in inspect.signature(enc_cls).parameters:
        kwargs["motion_share"] = mask_cfg.motion_share
    encoder = enc_cls(**kwargs)
    decoder = DECODER_MASKS.build(mask_cfg.decoder, ratio=mask_cfg.decoder_ratio)
    return encoder, decoder


def batch_generator(seed: int, indices: list[int] | torch.Tensor, device: str = "cpu") -> torch.Generator:
    """A generator seeded from ``seed`` and the ordered sample indices of a batch."""
    idx = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    entropy = [int(seed) % 2**64, len(idx), *(i % 2**64 for i in idx)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state))


class MaskCollator:
    """Stacks dataset items and draws the encoder and decoder masks of the batch.

    Args:
        grid: token grid of the clips.
        encoder: encoder strategy (True = hidden from the encoder).
        decoder: decoder strategy (True = reconstructed; a subset of the encoder mask).
        seed: run seed.

    ``__call__(items)`` takes dataset dicts ``{"video": [3,T,S,S] or [R,3,T,S,S], "label": int,
    "index": int, "motion": [t,h,w,2] or [R,t,h,w,2] or None, "failed": list[str] (optional)}``
    and returns ``{"video": [B,3,T,S,S], "label": [B] long, "index": [B] long, "clip": [B] long,
    "motion": [B,t,h,w,2] or None, "failed": list[str], "encoder_mask": [B,N] bool,
    "decoder_mask": [B,N] bool, "mask_fallbacks": int}`` where ``B`` counts clips (an item of R
    repeats gives R rows, each with its own masks). Items without motion get zero motion (MGM
    then uses its SMM fallback for them). The masks are a function of the seed and the batch's
    ``(index, clip)`` pairs.
    """

    def __init__(self, grid: TokenGrid, encoder: MaskStrategy, decoder: MaskStrategy, seed: int) -> None:
        self.grid = grid
        self.encoder = encoder
        self.decoder = decoder
        self.seed = int(seed)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from mvm.data.datasets import stack_items

        if not items:
            raise ValueError("MaskCollator got an empty batch")
        shape = (*self.grid.shape, 2)
        for it in items:
            m = it.get("motion")
            if m is not None and tuple(m.shape[-4:]) != shape:
                raise ValueError(f"item motion must be [t, h, w, 2] = {list(shape)}, got {list(m.shape)}")
        batch = stack_items(items)  # an item of R repeats gives R rows, each masked on its own
        b, motion = batch["video"].shape[0], batch["motion"]
        if motion is not None:
            motion = batch["motion"] = motion.float()
        gen = batch_generator(self.seed, batch["index"] * 1024 + batch["clip"])
        before = getattr(self.encoder, "fallbacks", 0)
        enc = self.encoder(self.grid, b, gen, MaskContext(motion=motion))
        dec = self.decoder(self.grid, b, gen, MaskContext(motion=motion, encoder_mask=enc))
        batch.update(encoder_mask=enc, decoder_mask=dec,
                     mask_fallbacks=getattr(self.encoder, "fallbacks", 0) - before)
        return batch

    def __repr__(self) -> str:
        return f"MaskCollator(grid={self.grid.shape}, encoder={self.encoder}, decoder={self.decoder}, seed={self.seed})"

"""Quantisers for the tokenizer latents: FSQ (default) or LFQ, from vector-quantize-pytorch.

Both give every token a code and its per-level *digits*: FSQ with levels ``[8, 5, 5, 5]`` has a
1000-entry codebook whose code ``c`` is the mixed-radix number of 4 digits (digit ``i`` in
``[0, levels[i])``); LFQ with ``b`` bits is the same with ``levels = [2] * b``. The MAE's token
target predicts the digits with one small softmax per level (``mvm.targets.token_loss``), so the
head grows with ``sum(levels)``, not with the codebook size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Quantizer(nn.Module):
    """Quantise ``[B, D, t, h, w]`` latents token by token.

    Args:
        dim: latent channels ``D``.
        kind: ``"fsq"`` (finite scalar quantisation) or ``"lfq"`` (lookup-free, one bit per level).
        levels: FSQ levels per code dimension; for LFQ only ``len(levels)`` matters (the bits) and
            every level must be 2.
    """

    def __init__(self, dim: int, kind: str = "fsq", levels: list[int] | tuple[int, ...] = (8, 5, 5, 5)) -> None:
        super().__init__()
        from vector_quantize_pytorch import FSQ, LFQ

        self.kind = kind
        self.levels = [int(v) for v in levels]
        if kind == "fsq":
            if any(v < 2 for v in self.levels):
                raise ValueError(f"FSQ levels must be >= 2, got {self.levels}")
            self.q = FSQ(levels=self.levels, dim=dim)
        elif kind == "lfq":
            if any(v != 2 for v in self.levels):
                raise ValueError(f"LFQ codes are bits: levels must all be 2, got {self.levels}")
            self.q = LFQ(dim=dim, codebook_size=2 ** len(self.levels), entropy_loss_weight=0.1)
        else:
            raise ValueError(f"unknown quantizer '{kind}'; known: fsq, lfq")
        # mixed-radix place values: code = sum(digit_i * basis_i)
        basis = torch.tensor([math.prod(self.levels[:i]) for i in range(len(self.levels))], dtype=torch.long)
        self.register_buffer("basis", basis, persistent=False)
        self.register_buffer("level_sizes", torch.tensor(self.levels, dtype=torch.long), persistent=False)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def digits(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-level digits of codes: ``[...]`` long -> ``[..., L]`` long, digit ``i`` in ``[0, levels[i])``."""
        # (buffers, not tensors made here: on a GPU that would be a blocking copy every step)
        return (codes.long()[..., None] // self.basis.to(codes.device)) % self.level_sizes.to(codes.device)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, D, t, h, w]`` -> quantised ``[B, D, t, h, w]`` (straight-through gradients),
        codes ``[B, N]`` long in (t, h, w) order, and the auxiliary loss (LFQ entropy; 0 for FSQ)."""
        b, d, t, h, w = z.shape
        tokens = z.flatten(2).transpose(1, 2)  # [B, N, D]
        if self.kind == "fsq":
            zq, codes = self.q(tokens)
            aux = tokens.new_zeros(())
        else:
            zq, codes, aux = self.q(tokens)
        zq = zq.transpose(1, 2).reshape(b, d, t, h, w)
        return zq.to(z.dtype), codes.long(), aux.float()

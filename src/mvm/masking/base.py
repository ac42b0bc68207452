"""The masking interface shared by encoder and decoder masks.

A strategy is called as ``strategy(grid, batch, generator, context)`` and returns a boolean
tensor ``[B, N]`` (``N = grid.num_tokens``, tokens in (t, h, w) order) with **exactly the same
number of True entries in every row**, so that gathers never see ragged rows.

- For an *encoder* mask, True means "hidden from the encoder" (transformers' ``bool_masked_pos``
  convention).
- For a *decoder* mask, True means "reconstructed by the decoder"; it is always a subset of the
  encoder mask (``context.encoder_mask``), so the loss counts tokens that are both encoder-masked
  and decoder-kept.

Masks are drawn outside the model (in the collate step); the model consumes index tensors made by
:func:`mask_to_indices`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from mvm.grid import TokenGrid
from mvm.registry import Registry


@dataclass
class MaskContext:
    """What a strategy may look at besides the grid.

    Attributes:
        motion: token-grid motion ``[B, t, h, w, 2]`` (dx, dy in pixels per frame), or None.
        scores: token importance ``[B, N]`` (higher = more worth decoding), or None.
        encoder_mask: the encoder mask ``[B, N]`` bool; required by decoder strategies.
    """

    motion: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    encoder_mask: torch.Tensor | None = None


class MaskStrategy(ABC):
    """Base class: subclasses implement :meth:`sample`; ``__call__`` checks the contract."""

    #: "encoder" or "decoder"
    role: str = "encoder"
    #: True when ``sample`` reads ``context.motion``; the data loader skips motion otherwise.
    needs_motion: bool = False

    def __init__(self, ratio: float) -> None:
        if not 0.0 < ratio < 1.0 and not (self.role == "decoder" and ratio == 1.0):
            raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
        self.ratio = float(ratio)

    def count(self, grid: TokenGrid) -> int:
        """Number of True entries per row for this grid."""
        return int(self.ratio * grid.num_tokens)

    @abstractmethod
    def sample(
        self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext
    ) -> torch.Tensor:
        """Return ``[B, N]`` bool with ``self.count(grid)`` (or the documented count) True per row."""

    def __call__(
        self,
        grid: TokenGrid,
        batch: int,
        generator: torch.Generator,
        context: MaskContext | None = None,
    ) -> torch.Tensor:
        mask = self.sample(grid, batch, generator, context or MaskContext())
        if mask.shape != (batch, grid.num_tokens) or mask.dtype != torch.bool:
            raise RuntimeError(f"{type(self).__name__} returned {tuple(mask.shape)} {mask.dtype}")
        counts = mask.sum(1)
        if batch and bool((counts != counts[0]).any()):
            raise RuntimeError(f"{type(self).__name__} returned ragged masks: counts {counts.tolist()}")
        return mask

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ratio={self.ratio})"


ENCODER_MASKS: Registry[MaskStrategy] = Registry("encoder mask")
DECODER_MASKS: Registry[MaskStrategy] = Registry("decoder mask")


def random_subset(candidates: torch.Tensor, k: int, generator: torch.Generator,
                  priority: torch.Tensor | None = None) -> torch.Tensor:
    """Pick exactly ``k`` True entries per row among ``candidates``.

    Args:
        candidates: ``[B, N]`` bool; every row must hold at least ``k`` True entries.
        k: how many to keep per row.
        generator: seeded generator for the random tie-break.
        priority: optional ``[B, N]`` float; higher is chosen first, random noise breaks ties.

    Returns:
        ``[B, N]`` bool with exactly ``k`` True per row, a subset of ``candidates``.
    """
    noise = torch.rand(candidates.shape, generator=generator, device=candidates.device)
    score = noise if priority is None else priority.float() + noise * 1e-3
    score = score.masked_fill(~candidates, float("-inf"))
    if int(candidates.sum(1).min()) < k:
        raise ValueError(f"cannot pick {k} tokens: a row has only {int(candidates.sum(1).min())}")
    n = candidates.shape[1]
    if 2 * k > n:
        # topk is slow for large k: drop the n - k lowest instead (non-candidates, at -inf, are
        # always among them because every row holds at least k candidates).
        idx = score.topk(n - k, dim=1, largest=False).indices
        return torch.ones_like(candidates).scatter_(1, idx, False)
    idx = score.topk(k, dim=1).indices
    return torch.zeros_like(candidates).scatter_(1, idx, True)


def mask_to_indices(mask: torch.Tensor) -> torch.Tensor:
    """Positions of the True entries of an equal-count mask.

    Args:
        mask: ``[B, N]`` bool with the same number ``K`` of True entries in each row.

    Returns:
        ``[B, K]`` long, ascending within each row.
    """
    b = mask.shape[0]
    k = int(mask[0].sum()) if b else 0
    idx = mask.nonzero(as_tuple=False)[:, 1]
    if idx.numel() != b * k:
        raise ValueError("mask rows hold different numbers of True entries")
    return idx.view(b, k)

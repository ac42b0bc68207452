"""Random masking over the whole space-time grid (MAE-ST) and independently per frame."""

from __future__ import annotations

import torch

from mvm.grid import TokenGrid
from mvm.masking.base import ENCODER_MASKS, MaskContext, MaskStrategy


class RandomMask(MaskStrategy):
    """``int(ratio * N)`` tokens drawn uniformly over all of space-time (MAE-ST)."""

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        k = self.count(grid)
        noise = torch.rand(batch, grid.num_tokens, generator=generator)
        idx = noise.argsort(dim=1)[:, :k]
        return torch.zeros(batch, grid.num_tokens, dtype=torch.bool).scatter_(1, idx, True)


class FrameRandomMask(MaskStrategy):
    """``int(ratio * h * w)`` tokens drawn independently in every token-frame (MGM's baseline)."""

    def count(self, grid: TokenGrid) -> int:
        return int(self.ratio * grid.spatial) * grid.t

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        k = int(self.ratio * grid.spatial)
        noise = torch.rand(batch, grid.t, grid.spatial, generator=generator)
        idx = noise.argsort(dim=2)[..., :k]
        mask = torch.zeros(batch, grid.t, grid.spatial, dtype=torch.bool).scatter_(2, idx, True)
        return mask.view(batch, grid.num_tokens)


ENCODER_MASKS.register("random")(RandomMask)
ENCODER_MASKS.register("frame_random")(FrameRandomMask)

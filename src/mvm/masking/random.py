"""Random masking over the whole space-time grid (MAE-ST) and independently per frame."""

from __future__ import annotations

import torch

from mvm.grid import TokenGrid
from mvm.masking.base import ENCODER_MASKS, MaskContext, MaskStrategy, random_subset


class RandomMask(MaskStrategy):
    """``int(ratio * N)`` tokens drawn uniformly over all of space-time (MAE-ST)."""

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        everything = torch.ones(batch, grid.num_tokens, dtype=torch.bool)
        return random_subset(everything, self.count(grid), generator)


class FrameRandomMask(MaskStrategy):
    """``int(ratio * h * w)`` tokens drawn independently in every token-frame (MGM's baseline)."""

    def count(self, grid: TokenGrid) -> int:
        return int(self.ratio * grid.spatial) * grid.t

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        frames = torch.ones(batch * grid.t, grid.spatial, dtype=torch.bool)
        mask = random_subset(frames, int(self.ratio * grid.spatial), generator)
        return mask.view(batch, grid.num_tokens)


ENCODER_MASKS.register("random")(RandomMask)
ENCODER_MASKS.register("frame_random")(FrameRandomMask)

"""Tube masking (VideoMAE): the same spatial positions hidden in every token-frame."""

from __future__ import annotations

import torch

from mvm.grid import TokenGrid
from mvm.masking.base import ENCODER_MASKS, MaskContext, MaskStrategy, random_subset


class TubeMask(MaskStrategy):
    """``int(ratio * h * w)`` spatial positions per sample, masked through all ``t`` token-frames."""

    def count(self, grid: TokenGrid) -> int:
        return int(self.ratio * grid.spatial) * grid.t

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        positions = torch.ones(batch, grid.spatial, dtype=torch.bool)
        plane = random_subset(positions, int(self.ratio * grid.spatial), generator)
        return plane[:, None, :].expand(batch, grid.t, grid.spatial).reshape(batch, grid.num_tokens)


ENCODER_MASKS.register("tube")(TubeMask)

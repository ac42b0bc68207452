"""LVMAE's adaptive decoder mask: decode the encoder-masked tokens a frozen tokenizer scores highest.

``ratio`` is the budget as a share of ALL ``N`` tokens (LVMAE: 0.15), capped at the encoder's
masked count like every decoder mask. The scores come in ``context.scores`` ``[B, N]`` (the
tokenizer's scorer, ``mvm.tokenizer.lvmae``); there is no randomness: the same scores and encoder
mask always give the same tokens, on whatever device the scores live (no host round trip).
"""

from __future__ import annotations

import torch

from mvm.grid import TokenGrid
from mvm.masking.base import DECODER_MASKS, MaskContext
from mvm.masking.decoder import DecoderMask


class AdaptiveDecoderMask(DecoderMask):
    """Among the encoder-masked tokens, the ``int(ratio * N)`` with the highest scores, per sample."""

    #: the loader cannot draw this mask: it needs the tokenizer's scores (``context.scores``)
    needs_scores: bool = True

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext) -> torch.Tensor:
        enc, scores = context.encoder_mask, context.scores
        if scores is None:
            raise ValueError("the adaptive decoder mask needs token scores (context.scores) from a tokenizer: "
                             "set train.tokenizer to a `mvm tokenizer train` run folder")
        if tuple(scores.shape) != (batch, grid.num_tokens):
            raise ValueError(f"scores must be [{batch}, {grid.num_tokens}], got {list(scores.shape)}")
        k = self.decode_count(grid, self._encoder_count(enc))
        ranked = scores.float().masked_fill(~enc.to(scores.device), float("-inf"))
        idx = ranked.topk(k, dim=1).indices  # every row holds >= k masked tokens, so no -inf is picked
        return torch.zeros(enc.shape, dtype=torch.bool, device=scores.device).scatter_(1, idx, True)


DECODER_MASKS.register("adaptive")(AdaptiveDecoderMask)

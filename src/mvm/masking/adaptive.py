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
        idx = self.decoded_indices(grid, context.scores, context.encoder_mask)
        return torch.zeros((batch, grid.num_tokens), dtype=torch.bool, device=idx.device).scatter_(1, idx, True)

    def decoded_indices(self, grid: TokenGrid, scores: torch.Tensor | None, encoder_mask: torch.Tensor) -> torch.Tensor:
        """``[B, k]`` ascending positions of the decoded tokens on the scores' device: what
        ``mask_to_indices(self(...))`` gives, without a host read of device tensors when
        ``encoder_mask`` (``[B, N]`` bool, equal counts per row, as the loader draws it) is on the host.

        Args:
            scores: ``[B, N]`` the tokenizer's token scores, higher decoded first.
        """
        if scores is None:
            raise ValueError("the adaptive decoder mask needs token scores (context.scores) from a tokenizer: "
                             "set train.tokenizer to a `mvm tokenizer train` run folder")
        if tuple(scores.shape) != tuple(encoder_mask.shape) or scores.shape[1] != grid.num_tokens:
            raise ValueError(f"scores must be [{encoder_mask.shape[0]}, {grid.num_tokens}], got {list(scores.shape)}")
        k = self.decode_count(grid, self._encoder_count(encoder_mask))
        enc = encoder_mask.to(scores.device, non_blocking=True)
        ranked = scores.float().masked_fill(~enc, float("-inf"))
        # every row holds >= k masked tokens, so no -inf is picked
        return ranked.topk(k, dim=1).indices.sort(dim=1).values


DECODER_MASKS.register("adaptive")(AdaptiveDecoderMask)

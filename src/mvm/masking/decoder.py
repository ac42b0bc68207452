"""Decoder masks: which encoder-masked tokens the decoder reconstructs (and the loss counts).

``ratio`` is the share of ALL ``N`` tokens decoded: ``int(ratio * N)`` tokens per sample, capped at
the encoder's masked count (a decoder can only reconstruct what the encoder did not see). The
result is always a subset of ``context.encoder_mask`` with the same count in every row.

- ``none``: every encoder-masked token (VideoMAE); ``ratio`` is ignored.
- ``random``: a uniform random subset of the masked tokens.
- ``running_cell`` (VideoMAE V2): in each 2x2 spatial cell two of the four positions are decoded,
  the pair rotating one step per token-frame (random phase per sample); restricted to masked tokens
  and then topped up or trimmed at random to the exact count.
"""

from __future__ import annotations

import torch

from mvm.grid import TokenGrid
from mvm.masking.base import DECODER_MASKS, MaskContext, MaskStrategy, random_subset


class DecoderMask(MaskStrategy):
    """Base of decoder strategies: checks the encoder mask going in and the subset coming out."""

    role = "decoder"

    def decode_count(self, grid: TokenGrid, encoder_count: int) -> int:
        """Tokens decoded per sample for an encoder mask hiding ``encoder_count`` tokens."""
        return min(int(self.ratio * grid.num_tokens), encoder_count)

    def __call__(self, grid: TokenGrid, batch: int, generator: torch.Generator,
                 context: MaskContext | None = None) -> torch.Tensor:
        enc = None if context is None else context.encoder_mask
        if enc is None:
            raise ValueError(f"{type(self).__name__} needs context.encoder_mask")
        if tuple(enc.shape) != (batch, grid.num_tokens) or enc.dtype != torch.bool:
            raise ValueError(f"encoder_mask must be [{batch}, {grid.num_tokens}] bool, "
                             f"got {list(enc.shape)} {enc.dtype}")
        mask = super().__call__(grid, batch, generator, context)
        if bool((mask & ~enc).any()):
            raise RuntimeError(f"{type(self).__name__} decoded tokens the encoder saw")
        return mask

    @staticmethod
    def _encoder_count(enc: torch.Tensor) -> int:
        return int(enc[0].sum()) if enc.shape[0] else 0


class NoDecoderMask(DecoderMask):
    """Decode every encoder-masked token."""

    def decode_count(self, grid: TokenGrid, encoder_count: int) -> int:
        return encoder_count

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        return context.encoder_mask.clone()


class RandomDecoderMask(DecoderMask):
    """A uniform random subset of the encoder-masked tokens."""

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        enc = context.encoder_mask
        k = self.decode_count(grid, self._encoder_count(enc))
        return random_subset(enc, k, generator)


class RunningCellDecoderMask(DecoderMask):
    """VideoMAE V2 running cell, restricted to the encoder-masked tokens, exact count."""

    def sample(self, grid: TokenGrid, batch: int, generator: torch.Generator, context: MaskContext):
        enc = context.encoder_mask
        k = self.decode_count(grid, self._encoder_count(enc))
        cell = running_cell_pattern(grid, batch, generator).to(enc.device)
        # Pattern tokens the encoder hid come first; random_subset trims them or tops up at random.
        return random_subset(enc, k, generator, priority=(cell & enc).float())


def running_cell_pattern(grid: TokenGrid, batch: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, N]`` bool: half of each 2x2 cell, the pair rotating by one each token-frame.

    Cell positions are numbered (0,0)=0, (0,1)=1, (1,0)=2, (1,1)=3; at token-frame ``i`` with
    phase ``p`` positions ``(i + p) % 4`` and ``(i + p + 1) % 4`` are decoded (the rolled
    ``[1, 1, 0, 0]`` pattern of VideoMAE V2). Cells cut by an odd grid edge keep their part.
    """
    t, h, w = grid.shape
    phase = torch.randint(0, 4, (batch,), generator=generator, device=generator.device).cpu()
    pos = (torch.arange(h)[:, None] % 2) * 2 + torch.arange(w)[None, :] % 2  # [h, w]
    shift = (torch.arange(t)[None, :] + phase[:, None]) % 4  # [B, t]
    rel = (pos.view(1, 1, h * w) - shift[..., None]) % 4  # [B, t, h*w]
    return (rel < 2).reshape(batch, grid.num_tokens)


DECODER_MASKS.register("none")(NoDecoderMask)
DECODER_MASKS.register("random")(RandomDecoderMask)
DECODER_MASKS.register("running_cell")(RunningCellDecoderMask)

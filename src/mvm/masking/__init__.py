"""Mask strategies. Importing this package registers every built-in strategy.

Encoder masks (``ENCODER_MASKS``): random, frame_random, tube, smm, mgm.
Decoder masks (``DECODER_MASKS``): none, random, running_cell, adaptive (LVMAE; needs token scores).
"""

from mvm.masking import adaptive, decoder, motion, random, tube  # noqa: F401  (registration side effects)
from mvm.masking.base import (
    DECODER_MASKS,
    ENCODER_MASKS,
    MaskContext,
    MaskStrategy,
    mask_to_indices,
    random_subset,
)
from mvm.masking.collate import MaskCollator, batch_generator, build_masks

__all__ = [
    "DECODER_MASKS",
    "ENCODER_MASKS",
    "MaskCollator",
    "MaskContext",
    "MaskStrategy",
    "batch_generator",
    "build_masks",
    "mask_to_indices",
    "random_subset",
]

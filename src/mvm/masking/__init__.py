"""Mask strategies. Importing this package registers every built-in strategy."""

from mvm.masking import random, tube  # noqa: F401  (registration side effects)
from mvm.masking.base import (
    DECODER_MASKS,
    ENCODER_MASKS,
    MaskContext,
    MaskStrategy,
    mask_to_indices,
    random_subset,
)

__all__ = [
    "DECODER_MASKS",
    "ENCODER_MASKS",
    "MaskContext",
    "MaskStrategy",
    "mask_to_indices",
    "random_subset",
]

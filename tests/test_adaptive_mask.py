"""The adaptive decoder mask: the highest scores among the encoder-masked tokens, exact count."""

from __future__ import annotations

import pytest
import torch

from mvm.config import ConfigError, load_config
from mvm.grid import TokenGrid
from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext, mask_to_indices

GRID = TokenGrid(4, 4, 4, tubelet=2, patch=8)


@pytest.mark.parametrize("encoder", ENCODER_MASKS.names())
def test_picks_the_highest_scores_among_masked_tokens(encoder):
    g = torch.Generator().manual_seed(0)
    b, n = 3, GRID.num_tokens
    motion = torch.randn(b, *GRID.shape, 2, generator=g)
    enc = ENCODER_MASKS.build(encoder, ratio=0.75)(GRID, b, g, MaskContext(motion=motion))
    scores = torch.randn(b, n, generator=g)
    dec = DECODER_MASKS.build("adaptive", ratio=0.15)(GRID, b, g, MaskContext(scores=scores, encoder_mask=enc))
    k = int(0.15 * n)
    assert dec.dtype == torch.bool and (dec.sum(1) == k).all()
    assert not (dec & ~enc).any()  # a subset of the encoder mask
    for i in range(b):
        masked = enc[i].nonzero().flatten()
        best = masked[scores[i, masked].argsort(descending=True)[:k]]
        assert set(dec[i].nonzero().flatten().tolist()) == set(best.tolist())
        # every decoded score beats every masked-but-not-decoded one
        assert scores[i][dec[i]].min() > scores[i][enc[i] & ~dec[i]].max()
    # the training step's path: the same tokens as indices, ascending, without building the mask
    idx = DECODER_MASKS.build("adaptive", ratio=0.15).decoded_indices(GRID, scores, enc)
    assert torch.equal(idx, mask_to_indices(dec))


def test_deterministic_capped_and_needs_scores():
    g = torch.Generator().manual_seed(1)
    enc = ENCODER_MASKS.build("random", ratio=0.25)(GRID, 2, g)
    scores = torch.rand(2, GRID.num_tokens, generator=g)
    mask = DECODER_MASKS.build("adaptive", ratio=0.5)
    a = mask(GRID, 2, torch.Generator().manual_seed(5), MaskContext(scores=scores, encoder_mask=enc))
    b = mask(GRID, 2, torch.Generator().manual_seed(6), MaskContext(scores=scores, encoder_mask=enc))
    assert torch.equal(a, b)  # no randomness: the scores decide
    assert torch.equal(a, enc)  # the budget (32) is capped at the 16 masked tokens
    with pytest.raises(ValueError, match="scores"):
        mask(GRID, 2, g, MaskContext(encoder_mask=enc))
    with pytest.raises(ValueError, match=r"\[2, 64\]"):
        mask(GRID, 2, g, MaskContext(scores=scores[:, :10], encoder_mask=enc))


def test_config_refuses_adaptive_or_tokens_without_a_tokenizer():
    with pytest.raises(ConfigError, match="train.tokenizer"):
        load_config(None, ["mask.decoder=adaptive", "mask.decoder_ratio=0.15"])
    with pytest.raises(ConfigError, match="train.tokenizer"):
        load_config(None, ["train.target=tokens"])
    cfg = load_config(None, ["mask.decoder=adaptive", "train.target=tokens", "train.tokenizer=runs/tok"])
    assert cfg.mask.decoder == "adaptive"

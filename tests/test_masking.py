"""Mask strategies: exact counts, determinism, decoder/encoder pairing, motion-following regions."""

import logging

import numpy as np
import pytest
import torch

from mvm.config import MaskConfig
from mvm.grid import TokenGrid
from mvm.masking import DECODER_MASKS, ENCODER_MASKS, MaskContext, build_masks, mask_to_indices
from mvm.masking.decoder import running_cell_pattern
from mvm.masking.motion import MotionGuidedMask, SimulatedMotionMask

ENCODERS = ENCODER_MASKS.names()
DECODERS = DECODER_MASKS.names()
GRIDS = [TokenGrid(8, 14, 14), TokenGrid(1, 14, 14), TokenGrid(64, 14, 14), TokenGrid(3, 5, 7),
         TokenGrid(2, 1, 1), TokenGrid(4, 4, 4)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def moving_block(grid: TokenGrid, batch: int = 1, size: int = 3, speed: float = 8.0,
                 pan: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-grid motion of one ``size x size`` block moving right one token per token-frame.

    Returns motion ``[B, t, h, w, 2]`` and the object's tokens ``[B, N]`` bool.
    """
    motion = torch.zeros(batch, *grid.shape, 2)
    motion[..., 0] = pan
    obj = torch.zeros(batch, *grid.shape, dtype=torch.bool)
    y0 = (grid.h - size) // 2
    for i in range(grid.t):
        x0 = min(1 + i, grid.w - size)
        motion[:, i, y0:y0 + size, x0:x0 + size, 0] = speed + pan
        obj[:, i, y0:y0 + size, x0:x0 + size] = True
    return motion, obj.view(batch, -1)


def context_for(grid: TokenGrid, batch: int) -> MaskContext:
    return MaskContext(motion=moving_block(grid, batch, size=min(3, grid.h, grid.w))[0])


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("ratio", [0.75, 0.9])
def test_encoder_exact_count_on_every_grid(name, grid, ratio):
    strategy = ENCODER_MASKS.build(name, ratio=ratio)
    mask = strategy(grid, 3, gen(), context_for(grid, 3))
    assert mask.shape == (3, grid.num_tokens) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [strategy.count(grid)] * 3
    assert abs(strategy.count(grid) - ratio * grid.num_tokens) <= grid.t  # per-frame rounding at most


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_deterministic_for_a_seed(name):
    grid = TokenGrid(8, 14, 14)
    strategy = ENCODER_MASKS.build(name, ratio=0.9)
    ctx = context_for(grid, 4)
    a, b = strategy(grid, 4, gen(7), ctx), strategy(grid, 4, gen(7), ctx)
    assert torch.equal(a, b)
    assert not torch.equal(a, strategy(grid, 4, gen(8), ctx))


@pytest.mark.parametrize("name", ENCODERS)
def test_indices_are_valid_and_unique(name):
    grid = TokenGrid(4, 6, 5)
    mask = ENCODER_MASKS.build(name, ratio=0.75)(grid, 5, gen(), context_for(grid, 5))
    for m in (mask, ~mask):
        idx = mask_to_indices(m)
        assert idx.shape == (5, int(m[0].sum()))
        assert bool((idx >= 0).all()) and bool((idx < grid.num_tokens).all())
        assert bool((idx[:, 1:] > idx[:, :-1]).all())  # ascending, hence unique
        assert bool(m.gather(1, idx).all())


@pytest.mark.parametrize("enc_name", ENCODERS)
@pytest.mark.parametrize("dec_name", DECODERS)
@pytest.mark.parametrize("dec_ratio", [0.3, 0.5, 1.0])
def test_encoder_and_decoder_masks_combine(enc_name, dec_name, dec_ratio):
    grid = TokenGrid(4, 6, 6)
    enc = ENCODER_MASKS.build(enc_name, ratio=0.75)(grid, 4, gen(1), context_for(grid, 4))
    decoder = DECODER_MASKS.build(dec_name, ratio=dec_ratio)
    scores = torch.rand(4, grid.num_tokens, generator=gen(3))  # the tokenizer's, for the adaptive mask
    dec = decoder(grid, 4, gen(2), MaskContext(encoder_mask=enc, scores=scores))
    assert dec.dtype == torch.bool and dec.shape == enc.shape
    assert not bool((dec & ~enc).any())  # decoder only reconstructs what the encoder hid
    k = decoder.decode_count(grid, int(enc[0].sum()))
    assert dec.sum(1).tolist() == [k] * 4
    assert mask_to_indices(dec).shape[1] == int((enc & dec)[0].sum()) == k  # loss tokens
    if dec_name == "none":
        assert torch.equal(dec, enc)
    else:
        assert k == min(int(dec_ratio * grid.num_tokens), int(enc[0].sum()))


@pytest.mark.parametrize("dec_name", DECODERS)
def test_decoder_needs_a_matching_encoder_mask(dec_name):
    grid = TokenGrid(2, 4, 4)
    decoder = DECODER_MASKS.build(dec_name, ratio=0.5)
    with pytest.raises(ValueError, match="encoder_mask"):
        decoder(grid, 2, gen())
    with pytest.raises(ValueError, match="encoder_mask"):
        decoder(grid, 2, gen(), MaskContext(encoder_mask=torch.ones(2, 5, dtype=torch.bool)))


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_bad_encoder_ratio_raises(name, ratio):
    with pytest.raises(ValueError, match="ratio"):
        ENCODER_MASKS.build(name, ratio=ratio)


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_ratio_range(name):
    for bad in (0.0, 1.01, -1.0):
        with pytest.raises(ValueError, match="ratio"):
            DECODER_MASKS.build(name, ratio=bad)
    assert DECODER_MASKS.build(name, ratio=1.0).ratio == 1.0


@pytest.mark.parametrize("bad", [{"motion_share": 1.5}, {"aspect": (2.0, 1.0)}, {"fill": "zigzag"},
                                 {"max_step": -1}])
@pytest.mark.parametrize("name", ["smm", "mgm"])
def test_region_masks_refuse_bad_params(name, bad):
    with pytest.raises(ValueError):
        ENCODER_MASKS.build(name, ratio=0.9, **bad)


def test_tube_is_constant_over_time():
    grid = TokenGrid(8, 14, 14)
    mask = ENCODER_MASKS.build("tube", ratio=0.9)(grid, 4, gen()).view(4, grid.t, grid.spatial)
    assert bool((mask == mask[:, :1]).all())


@pytest.mark.parametrize("fill", ["tube", "random"])
def test_smm_region_is_masked_and_moves_continuously(fill):
    grid = TokenGrid(16, 14, 14)
    smm = SimulatedMotionMask(0.75, fill=fill)
    rows, cols, top, left = smm.regions(grid, 16, gen(3))
    assert (np.abs(np.diff(top, axis=1)) <= 1).all() and (np.abs(np.diff(left, axis=1)) <= 1).all()
    assert (top >= 0).all() and (top + rows[:, None] <= grid.h).all()
    assert (left >= 0).all() and (left + cols[:, None] <= grid.w).all()
    assert np.abs(np.diff(top, axis=1)).sum() + np.abs(np.diff(left, axis=1)).sum() > 0  # it does move
    mask = smm(grid, 16, gen(3)).view(16, grid.t, grid.h, grid.w)
    for b in range(16):
        for i in range(grid.t):
            y, x = top[b, i], left[b, i]
            assert bool(mask[b, i, y:y + rows[b], x:x + cols[b]].all())


def test_smm_tube_fill_is_one_ranking_for_all_token_frames():
    grid = TokenGrid(8, 14, 14)
    smm = SimulatedMotionMask(0.9)
    rows, cols, top, left = smm.regions(grid, 1, gen(5))
    mask = smm(grid, 1, gen(5)).view(grid.t, grid.h, grid.w)
    never = torch.ones(grid.h, grid.w, dtype=torch.bool)  # positions no region ever covers
    for i in range(grid.t):
        never[top[0, i]:top[0, i] + rows[0], left[0, i]:left[0, i] + cols[0]] = False
    outside = mask[:, never]  # [t, positions]
    # Each token-frame fills by the same tube ranking, so outside the regions the masked sets are
    # prefixes of one order: nested, and mostly the same.
    for i in range(grid.t):
        for j in range(grid.t):
            a, b = outside[i], outside[j]
            assert bool((a <= b).all()) or bool((b <= a).all())
    assert float((outside != outside[:1]).float().mean()) < 0.1


def test_mgm_hides_the_moving_object_and_random_does_not():
    grid = TokenGrid(8, 14, 14)
    motion, obj = moving_block(grid, batch=16)
    ctx = MaskContext(motion=motion)
    hidden = {}
    for name in ("mgm", "random", "tube"):
        mask = ENCODER_MASKS.build(name, ratio=0.75)(grid, 16, gen(0), ctx)
        hidden[name] = float(mask[obj].float().mean())
    assert hidden["mgm"] >= 0.9
    assert abs(hidden["random"] - 0.75) < 0.1
    assert hidden["tube"] < 0.9


def test_mgm_region_follows_the_object_continuously_despite_camera_pan():
    grid = TokenGrid(8, 14, 14)
    motion, obj = moving_block(grid, batch=8, pan=3.0)
    mgm = MotionGuidedMask(0.9)
    rows, cols, top, left, _ = mgm.regions(grid, 8, gen(), MaskContext(motion=motion))
    assert mgm.fallbacks == 0
    assert (np.abs(np.diff(top, axis=1)) <= 2).all() and (np.abs(np.diff(left, axis=1)) <= 2).all()
    region = np.zeros((8, grid.t, grid.h, grid.w), dtype=bool)
    for b in range(8):
        for i in range(grid.t):
            region[b, i, top[b, i]:top[b, i] + rows[b], left[b, i]:left[b, i] + cols[b]] = True
    assert region.reshape(8, -1)[obj.numpy()].mean() >= 0.9
    mask = mgm(grid, 8, gen(), MaskContext(motion=motion))
    assert float(mask[obj].float().mean()) >= 0.9


def test_mgm_falls_back_to_smm_without_motion_and_counts_it(caplog):
    grid = TokenGrid(4, 8, 8)
    mgm = MotionGuidedMask(0.75)
    smm = SimulatedMotionMask(0.75, max_step=mgm.max_step)
    with caplog.at_level(logging.DEBUG, logger="mvm.masking.motion"):
        static = mgm(grid, 3, gen(4), MaskContext(motion=torch.zeros(3, *grid.shape, 2)))
    assert mgm.fallbacks == 3 and "fallback" in caplog.text
    assert torch.equal(static, smm(grid, 3, gen(4)))  # the fallback is exactly SMM
    mgm(grid, 2, gen(), MaskContext())
    assert mgm.fallbacks == 5
    motion, _ = moving_block(grid, batch=3)
    motion[1] = 0.0  # one static clip in a moving batch
    mask = mgm(grid, 3, gen(), MaskContext(motion=motion))
    assert mgm.fallbacks == 6 and mask.sum(1).tolist() == [mgm.count(grid)] * 3


def test_mgm_keeps_the_highest_motion_tokens_when_the_region_exceeds_the_budget():
    grid = TokenGrid(3, 2, 2)  # budget 3 per frame, region 2x2 = 4 tokens
    mgm = MotionGuidedMask(0.75, motion_share=1.0, aspect=(1.0, 1.0), compensate_camera=False)
    motion = torch.zeros(1, *grid.shape, 2)
    motion[0, :, :, :, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    motion[0, 1, 1, 1, 0] = 0.5  # the weakest token moves in frame 1
    mask = mgm(grid, 1, gen(), MaskContext(motion=motion)).view(grid.t, grid.h, grid.w)
    assert not bool(mask[0, 0, 0]) and not bool(mask[2, 0, 0]) and not bool(mask[1, 1, 1])
    assert mask.sum().item() == mgm.count(grid)


def test_mgm_refuses_motion_of_the_wrong_shape():
    grid = TokenGrid(4, 8, 8)
    with pytest.raises(ValueError, match="motion"):
        MotionGuidedMask(0.9)(grid, 2, gen(), MaskContext(motion=torch.zeros(2, 4, 7, 8, 2)))


def test_mgm_ignores_nan_motion():
    grid = TokenGrid(4, 8, 8)
    motion, _ = moving_block(grid, batch=2)
    motion[0, 0, 0, 0] = float("nan")
    mask = MotionGuidedMask(0.9)(grid, 2, gen(), MaskContext(motion=motion))
    assert mask.sum(1).tolist() == [int(0.9 * 64) * 4] * 2


def test_running_cell_pattern_rotates_half_of_each_cell():
    grid = TokenGrid(8, 6, 6)
    cell = running_cell_pattern(grid, 3, gen()).view(3, grid.t, 3, 2, 3, 2).permute(0, 1, 2, 4, 3, 5)
    cell = cell.reshape(3, grid.t, 9, 4)  # [B, t, cells, 4 positions]
    assert bool((cell.sum(-1) == 2).all())
    assert bool((cell[:, 1:] != cell[:, :-1]).any(-1).all())  # changes every token-frame
    assert bool((cell[:, :4].sum(1) == 2).all())  # over 4 frames each position decoded twice


def test_running_cell_decodes_the_pattern_first():
    grid = TokenGrid(8, 14, 14)
    enc = ENCODER_MASKS.build("tube", ratio=0.9)(grid, 2, gen(1))
    dec = DECODER_MASKS.build("running_cell", ratio=0.5)(grid, 2, gen(2), MaskContext(encoder_mask=enc))
    cell = running_cell_pattern(grid, 2, gen(2))  # same first draw as inside the strategy
    wanted = cell & enc
    assert bool((dec | ~wanted).all())  # every pattern token the encoder hid is decoded
    assert dec.sum(1).tolist() == [grid.num_tokens // 2] * 2


def test_build_masks_from_config():
    enc, dec = build_masks(MaskConfig(encoder="mgm", ratio=0.75, decoder="running_cell", decoder_ratio=0.25,
                                      motion_share=0.3))
    assert isinstance(enc, MotionGuidedMask) and enc.ratio == 0.75 and enc.motion_share == 0.3
    assert dec.ratio == 0.25 and dec.role == "decoder"
    enc, dec = build_masks(MaskConfig(encoder="tube", ratio=0.9))
    assert enc.ratio == 0.9 and type(dec).__name__ == "NoDecoderMask"
    with pytest.raises(KeyError, match="unknown encoder mask"):
        build_masks(MaskConfig(encoder="zigzag"))


@pytest.mark.parametrize("name", ["smm", "mgm"])
@pytest.mark.parametrize("share", [0.0, 1.0])
@pytest.mark.parametrize("grid", [TokenGrid(1, 1, 1), TokenGrid(3, 2, 5), TokenGrid(4, 16, 9)], ids=str)
def test_region_masks_at_extreme_shares(name, share, grid):
    strategy = ENCODER_MASKS.build(name, ratio=0.5, motion_share=share)
    motion = torch.randn(2, *grid.shape, 2, generator=gen(1))
    mask = strategy(grid, 2, gen(), MaskContext(motion=motion))
    assert mask.sum(1).tolist() == [strategy.count(grid)] * 2

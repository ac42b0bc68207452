"""patchify / unpatchify: round trips, the (t,h,w) x (tubelet,py,px,c) layout, bad input."""

from __future__ import annotations

import pytest
import torch

from mvm.grid import TokenGrid
from mvm.models.patch import gather_tubelets, patchify, unpatchify

CASES = [  # (tubelet, patch, frames, height, width)
    (1, 8, 3, 16, 24),
    (2, 16, 4, 32, 32),
    (4, 4, 8, 12, 20),
    (2, 8, 4, 16, 40),  # non-square frames
]


@pytest.mark.parametrize("tubelet,patch,frames,height,width", CASES)
def test_round_trip(tubelet: int, patch: int, frames: int, height: int, width: int) -> None:
    video = torch.randn(2, 3, frames, height, width, generator=torch.Generator().manual_seed(0))
    grid = TokenGrid.from_clip(frames, (height, width), tubelet, patch)
    tokens = patchify(video, tubelet, patch)
    assert tokens.shape == (2, grid.num_tokens, tubelet * patch * patch * 3)
    assert torch.equal(unpatchify(tokens, grid), video)


@pytest.mark.parametrize("tubelet,patch,frames,height,width", CASES)
def test_layout_matches_the_contract(tubelet: int, patch: int, frames: int, height: int, width: int) -> None:
    """Token n = (t, h, w) row-major; value index = ((u * p + py) * p + px) * C + c."""
    video = torch.randn(1, 3, frames, height, width, generator=torch.Generator().manual_seed(1))
    tokens = patchify(video, tubelet, patch)
    grid = TokenGrid.from_clip(frames, (height, width), tubelet, patch)
    g = torch.Generator().manual_seed(2)
    for _ in range(50):
        t, h, w = (int(torch.randint(s, (1,), generator=g)) for s in grid.shape)
        u, py, px, c = (int(torch.randint(s, (1,), generator=g)) for s in (tubelet, patch, patch, 3))
        n = (t * grid.h + h) * grid.w + w
        d = ((u * patch + py) * patch + px) * 3 + c
        assert tokens[0, n, d] == video[0, c, t * tubelet + u, h * patch + py, w * patch + px]


def test_token_order_is_the_conv3d_order() -> None:
    """A Conv3d whose output channel k copies input value k (in patchify's order) gives patchify's tokens."""
    tubelet, patch, c = 2, 4, 3
    d = tubelet * patch * patch * c
    conv = torch.nn.Conv3d(c, d, (tubelet, patch, patch), stride=(tubelet, patch, patch), bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for k in range(d):
            u, rest = divmod(k, patch * patch * c)
            py, rest = divmod(rest, patch * c)
            px, ch = divmod(rest, c)
            conv.weight[k, ch, u, py, px] = 1.0
    video = torch.randn(2, c, 4, 8, 12)
    from_conv = conv(video).flatten(2).transpose(1, 2)
    torch.testing.assert_close(from_conv, patchify(video, tubelet, patch), rtol=0, atol=1e-6)


def test_matches_transformers_label_layout() -> None:
    """transformers' VideoMAEForPreTraining label code on [B, T, C, H, W] gives the same vectors."""
    b, t, c, h, w, u, p = 2, 4, 3, 16, 24, 2, 8
    video = torch.randn(b, c, t, h, w)
    frames = video.transpose(1, 2)  # [B, T, C, H, W]
    f = frames.reshape(b, t // u, u, c, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 5, 7, 3)
    theirs = f.reshape(b, (t // u) * (h // p) * (w // p), u * p * p * c)
    assert torch.equal(patchify(video, u, p), theirs)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="divide"):
        patchify(torch.zeros(1, 3, 3, 16, 16), 2, 8)
    with pytest.raises(ValueError, match="divide"):
        patchify(torch.zeros(1, 3, 4, 16, 20), 2, 8)
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        patchify(torch.zeros(3, 4, 16, 16), 2, 8)
    grid = TokenGrid(2, 2, 2, 2, 8)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 7, 2 * 8 * 8 * 3), grid)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 8, 100), grid)


@pytest.mark.parametrize("tubelet,patch,frames,height,width", CASES)
def test_gather_tubelets_reads_only_the_asked_tokens(tubelet: int, patch: int, frames: int, height: int,
                                                     width: int) -> None:
    """layout="target" rows are patchify's rows; layout="conv" rows times the Conv3d weight are the conv."""
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, frames, height, width, generator=g)
    n = TokenGrid.from_clip(frames, (height, width), tubelet, patch).num_tokens
    idx = torch.stack([torch.randperm(n, generator=g)[: max(1, n // 3)] for _ in range(2)])  # any order
    rows = gather_tubelets(video, tubelet, patch, idx, layout="target")
    assert torch.equal(rows, torch.gather(patchify(video, tubelet, patch), 1, idx[..., None].expand(-1, -1, rows.shape[-1])))
    conv = torch.nn.Conv3d(3, 5, (tubelet, patch, patch), (tubelet, patch, patch))
    with torch.no_grad():
        ref = conv(video).flatten(2).transpose(1, 2)
        ref = torch.gather(ref, 1, idx[..., None].expand(-1, -1, 5))
        out = gather_tubelets(video, tubelet, patch, idx) @ conv.weight.flatten(1).T + conv.bias
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # A non-contiguous clip (channels last) reads the same values.
    cl = video.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    assert torch.equal(gather_tubelets(cl, tubelet, patch, idx, layout="target"), rows)


def test_gather_tubelets_bad_input() -> None:
    video = torch.randn(2, 3, 4, 32, 32)
    with pytest.raises(ValueError, match="idx must be"):
        gather_tubelets(video, 2, 16, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="layout"):
        gather_tubelets(video, 2, 16, torch.zeros(2, 2, dtype=torch.long), layout="hwc")
    with pytest.raises(ValueError, match="does not divide"):
        gather_tubelets(video, 3, 16, torch.zeros(2, 2, dtype=torch.long))

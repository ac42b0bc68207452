import pytest

from mvm.grid import TokenGrid


def test_videomae_default_grid():
    g = TokenGrid.from_clip(16, 224, tubelet=2, patch=16)
    assert g.shape == (8, 14, 14)
    assert g.num_tokens == 1568 and g.spatial == 196
    assert g.frames == 16 and g.size == (224, 224)


def test_rectangular_and_long_clips():
    g = TokenGrid.from_clip(128, (96, 160), tubelet=4, patch=8)
    assert g.shape == (32, 12, 20)


@pytest.mark.parametrize("frames,size,tubelet,patch,word", [(15, 224, 2, 16, "frames"), (16, 220, 2, 16, "size")])
def test_indivisible_clip_is_refused(frames, size, tubelet, patch, word):
    with pytest.raises(ValueError, match=word):
        TokenGrid.from_clip(frames, size, tubelet, patch)

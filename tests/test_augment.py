import numpy as np
import pytest
import torch

from mvm.data.augment import OPS, Mixup, VideoRandAugment, cutmix_box, smooth_one_hot, soft_cross_entropy


def _clip(seed=0, t=4, h=16, w=16):
    return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(OPS))
def test_every_op_keeps_range_shape_and_treats_frames_alike(name):
    frame = _clip()[:1]
    clip = frame.expand(4, -1, -1, -1).clone()  # four identical frames
    out = OPS[name](clip, 0.7, -1.0)
    assert out.shape == clip.shape and out.dtype == clip.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # identical frames in, identical frames out: the op's parameters do not vary per frame
    assert torch.allclose(out[0], out[3], atol=1e-6)


def test_rand_augment_is_seeded_and_changes_the_clip():
    aug = VideoRandAugment(num_ops=4, magnitude=7, prob=1.0)
    clip = _clip(1)
    a = aug(clip, np.random.default_rng(5))
    b = aug(clip, np.random.default_rng(5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, clip)
    assert all(0 <= lv <= 1 for _, lv, _ in aug.draw(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="unknown RandAugment ops"):
        VideoRandAugment(ops=["Nope"])


def test_rand_augment_on_normalised_clips_round_trips_identity():
    aug = VideoRandAugment(num_ops=2, prob=0.0)  # no op applied: exact inverse of the normalisation
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    x = (_clip(2).transpose(0, 1) - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
    out = aug.normalised(x, mean, std, np.random.default_rng(0))
    assert out.shape == x.shape and torch.allclose(out, x, atol=1e-5)


def test_smoothed_targets():
    y = smooth_one_hot(torch.tensor([0, 2]), 4, 0.1)
    assert torch.allclose(y.sum(1), torch.ones(2))
    assert torch.allclose(y[0], torch.tensor([0.925, 0.025, 0.025, 0.025]))


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_cutmix_targets_sum_to_one_and_match_the_pixels(mixup, cutmix):
    video = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 3, 2, 8, 8).clone()  # clip b is all b
    labels = torch.tensor([0, 1, 2, 3])
    mix = Mixup(4, mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.1)
    for seed in range(6):
        out, targets = mix(video, labels, np.random.default_rng(seed))
        assert targets.shape == (4, 4)
        assert torch.allclose(targets.sum(1), torch.ones(4))
        lam = (float(targets[0, 0]) - 0.025) / 0.9  # weight of clip 0's own label, less smoothing
        if bool(((out[0] == 0) | (out[0] == 3)).all()):  # cutmix (or no mix): pasted area = 1 - lam
            assert abs(float((out[0] == 3).float().mean()) - (1 - lam)) < 1e-5
        else:  # mixup: every pixel blended with the same weight
            assert torch.allclose(out[0], torch.full_like(out[0], 3 * (1 - lam)), atol=1e-5)
    assert soft_cross_entropy(torch.zeros(2, 4), torch.full((2, 4), 0.25)).item() == pytest.approx(np.log(4))


def test_cutmix_box_stays_inside():
    rng = np.random.default_rng(0)
    for lam in (0.0, 0.3, 0.9, 1.0):
        y0, y1, x0, x1 = cutmix_box(10, 14, lam, rng)
        assert 0 <= y0 <= y1 <= 10 and 0 <= x0 <= x1 <= 14

"""Reconstruction targets and the masked loss against hand computations."""

from __future__ import annotations

import pytest
import torch

from mvm.targets import masked_mse, motion_target, mse, norm_pix_target, pixel_target

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1, 1)


def test_pixel_target_undoes_normalisation() -> None:
    pixels = torch.rand(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    target = pixel_target(_normalise(pixels), 2, 2, MEAN, STD)
    # token 0 = top-left 2x2 patch of both frames; value index ((u*2 + py)*2 + px)*3 + c
    assert target.shape == (1, 4, 2 * 2 * 2 * 3)
    assert target[0, 0, ((1 * 2 + 0) * 2 + 1) * 3 + 2] == pytest.approx(float(pixels[0, 2, 1, 0, 1]), abs=1e-6)


def test_norm_pix_against_hand_computation() -> None:
    """Per token and channel: (x - mean) / (sqrt(unbiased var) + 1e-6), computed with Python loops."""
    pixels = torch.rand(2, 3, 2, 4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    target = norm_pix_target(_normalise(pixels), 2, 2, MEAN, STD)
    assert target.shape == (2, 1 * 2 * 3, 2 * 2 * 2 * 3)
    for b in range(2):
        for n in range(6):
            th, tw = divmod(n, 3)
            for c in range(3):
                vals = [float(pixels[b, c, u, th * 2 + py, tw * 2 + px])
                        for u in range(2) for py in range(2) for px in range(2)]
                mean = sum(vals) / len(vals)
                sd = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
                for k, v in enumerate(vals):
                    assert float(target[b, n, k * 3 + c]) == pytest.approx((v - mean) / (sd + 1e-6), abs=2e-4)


def test_norm_pix_constant_cube_is_finite() -> None:
    video = _normalise(torch.full((1, 3, 2, 4, 4), 0.5))
    target = norm_pix_target(video, 2, 4, MEAN, STD)
    assert torch.isfinite(target).all() and target.abs().max() < 1e-3


def test_masked_mse_counts_only_decoded_tokens() -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.randn(2, 6, 5, generator=g)
    decode_idx = torch.tensor([[4, 1], [0, 5]])
    pred = torch.randn(2, 2, 5, generator=g)
    loss = masked_mse(pred, target, decode_idx)
    hand = sum(float(((pred[b, k] - target[b, decode_idx[b, k]]) ** 2).sum()) for b in range(2) for k in range(2)) / 20
    assert float(loss) == pytest.approx(hand, rel=1e-6)
    other = target.clone()
    other[0, [0, 2, 3, 5]] += 100.0  # tokens not decoded in sample 0
    other[1, [1, 2, 3, 4]] -= 100.0
    assert float(masked_mse(pred, other, decode_idx)) == pytest.approx(hand, rel=1e-6)


def test_masked_mse_gradient_and_bad_shapes() -> None:
    pred = torch.zeros(1, 2, 3, requires_grad=True)
    masked_mse(pred, torch.ones(1, 4, 3), torch.tensor([[0, 3]])).backward()
    torch.testing.assert_close(pred.grad, torch.full((1, 2, 3), -2.0 / 6))
    with pytest.raises(ValueError, match="do not agree"):
        masked_mse(torch.zeros(1, 3, 3), torch.ones(1, 4, 3), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="do not agree"):
        masked_mse(torch.zeros(1, 2, 4), torch.ones(1, 4, 3), torch.tensor([[0, 3]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mse_is_the_written_out_loss_bit_for_bit(dtype: torch.dtype) -> None:
    """The fused loss changes no number of the loss or of the prediction's gradient."""
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 37, 96, generator=g).to(dtype).requires_grad_()
    target = torch.randn(2, 37, 96, generator=g)
    ref = torch.mean((pred.float() - target) ** 2)
    (g_ref,) = torch.autograd.grad(ref, pred)
    out = mse(pred, target)
    (g_out,) = torch.autograd.grad(out, pred)
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    assert g_out.dtype == dtype and torch.equal(g_out, g_ref)
    assert out.untyped_storage().nbytes() == 4  # holds no pred-sized buffer (see mse)


def test_motion_target_is_token_ordered_and_scaled() -> None:
    motion = torch.zeros(2, 2, 3, 4, 2)
    motion[1, 1, 2, 3] = torch.tensor([4.0, -2.0])  # last token (t=1, h=2, w=3) of the second clip
    target = motion_target(motion, scale=2.0)
    assert target.shape == (2, 24, 2) and target.dtype == torch.float32
    assert torch.equal(target[1, 23], torch.tensor([2.0, -1.0]))
    assert target[0].abs().sum() == 0 and target[1, :23].abs().sum() == 0
    # the loss of the motion head: masked_mse over the visible tokens' rows
    pred = torch.zeros(2, 1, 2)
    assert masked_mse(pred, target, torch.tensor([[23], [23]])).item() == pytest.approx((2**2 + 1) / 4)


def test_motion_target_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="motion must be"):
        motion_target(torch.zeros(2, 3, 4, 2))
    with pytest.raises(ValueError, match="scale"):
        motion_target(torch.zeros(1, 1, 1, 1, 2), scale=0.0)


def test_token_loss_against_hand_computation_and_only_decoded_tokens() -> None:
    """Factorised CE: per decoded token and level, -log softmax(group)[digit], averaged; tokens
    outside ``decode_idx`` do not move the loss whatever their digits."""
    import math

    from mvm.targets import token_loss

    g = torch.Generator().manual_seed(3)
    levels = [3, 2, 4]
    b, n, k = 2, 6, 2
    digits = torch.stack([torch.randint(0, v, (b, n), generator=g) for v in levels], dim=-1)  # [B, N, 3]
    logits = torch.randn(b, k, sum(levels), generator=g)
    decode_idx = torch.tensor([[1, 4], [0, 5]])
    expected = 0.0
    for i in range(b):
        for j in range(k):
            tok = int(decode_idx[i, j])
            start = 0
            for lv, size in enumerate(levels):
                group = logits[i, j, start:start + size].tolist()
                lse = math.log(sum(math.exp(x) for x in group))
                expected += lse - group[int(digits[i, tok, lv])]
                start += size
    expected /= b * k * len(levels)
    loss = token_loss(logits, digits, decode_idx, levels)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    other = digits.clone()
    other[0, [0, 2, 3, 5]] = 0  # tokens row 0 does not decode
    other[1, [1, 2, 3, 4]] = 1
    assert float(token_loss(logits, other, decode_idx, levels)) == pytest.approx(expected, rel=1e-6)
    other[0, 1, 0] = (digits[0, 1, 0] + 1) % 3  # a decoded token's digit does move it
    assert float(token_loss(logits, other, decode_idx, levels)) != pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="sum"):
        token_loss(logits[..., :-1], digits, decode_idx, levels)


def test_targets_of_some_tokens_equal_the_gathered_full_targets():
    from mvm.targets import norm_pix_target, pixel_target

    g = torch.Generator().manual_seed(3)
    video = torch.randn(2, 3, 4, 16, 16, generator=g)
    idx = torch.stack([torch.randperm(8, generator=g)[:5] for _ in range(2)])  # grid 2 x 2 x 2
    for fn in (pixel_target, norm_pix_target):
        full = fn(video, 2, 8, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
        some = fn(video, 2, 8, [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], idx=idx)
        assert some.shape == (2, 5, 2 * 8 * 8 * 3)
        assert torch.allclose(some, torch.gather(full, 1, idx[..., None].expand(-1, -1, full.shape[-1])), atol=1e-5)


@pytest.mark.parametrize("channels", [3, 1])
def test_targets_in_place_leave_the_clip_alone_and_change_no_number(channels: int) -> None:
    """The targets are computed in place in their own buffer: the clip is untouched, the pixels are
    bit for bit those of the out-of-place formula and the normalised values agree with it (and with
    float64) to float32 rounding; some tokens' targets are bit for bit the full targets' rows."""
    from mvm.models.patch import patchify

    g = torch.Generator().manual_seed(4)
    video = torch.randn(2, channels, 4, 16, 16, generator=g)
    keep = video.clone()
    mean, std = MEAN[:channels], STD[:channels]
    idx = torch.stack([torch.randperm(8, generator=g)[:5] for _ in range(2)])
    pix = patchify(video * torch.tensor(std).view(1, -1, 1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1, 1), 2, 8)
    x = pix.view(2, 8, -1, channels)
    var, mu = torch.var_mean(x, dim=-2, unbiased=True, keepdim=True)
    ref = ((x - mu) / (var.sqrt() + 1e-6)).reshape(2, 8, -1)
    var64, mu64 = torch.var_mean(x.double(), dim=-2, unbiased=True, keepdim=True)
    ref64 = ((x.double() - mu64) / (var64.sqrt() + 1e-6)).reshape(2, 8, -1)
    full = norm_pix_target(video, 2, 8, mean, std)
    torch.testing.assert_close(full, ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(full.double(), ref64, atol=2e-6, rtol=0)
    some = norm_pix_target(video, 2, 8, mean, std, idx=idx)
    assert torch.equal(some, torch.gather(full, 1, idx[..., None].expand(-1, -1, full.shape[-1])))
    assert torch.equal(pixel_target(video, 2, 8, mean, std, idx=idx),
                       torch.gather(pix, 1, idx[..., None].expand(-1, -1, pix.shape[-1])))
    assert torch.equal(video, keep)


def test_targets_of_one_pixel_tokens_leave_the_clip_alone() -> None:
    """With one channel and 1x1x1 tokens the token layout is a view of the clip itself: the
    targets must still come in a buffer of their own."""
    video = torch.randn(1, 1, 2, 3, 3, generator=torch.Generator().manual_seed(5))
    keep = video.clone()
    pix = pixel_target(video, 1, 1, [0.5], [0.25])
    assert torch.equal(pix, (video * 0.25 + 0.5).reshape(1, 18, 1))
    norm_pix_target(video, 1, 1, [0.5], [0.25])
    assert torch.equal(video, keep)

"""The LVMAE tokenizer: grid, codes, digits, the differentiable top-k, gradients to the scorer."""

from __future__ import annotations

import math

import pytest
import torch

from mvm.tokenizer import build_tokenizer, straight_through_topk, topk_mask
from mvm.tokenizer.quantize import Quantizer


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return build_tokenizer("tiny", tubelet=2, patch=8)


def test_shapes_grid_and_code_ranges(tok):
    video = torch.randn(2, 3, 4, 32, 16)
    out = tok(video, k=3)
    n = (4 // 2) * (32 // 8) * (16 // 8)  # the MAE token grid: T/tubelet x H/patch x W/patch
    assert out.recon_all.shape == out.recon_topk.shape == video.shape
    assert out.scores.shape == out.keep.shape == out.codes.shape == (2, n)
    assert out.codes.dtype == torch.long
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < math.prod(tok.levels) == 1000
    digits = tok.quantizer.digits(out.codes)
    assert digits.shape == (2, n, 4)
    for i, lv in enumerate(tok.levels):
        assert 0 <= int(digits[..., i].min()) and int(digits[..., i].max()) < lv
    # digits are the mixed-radix expansion of the code, and match the library's own
    assert torch.equal((digits * tok.quantizer.basis).sum(-1), out.codes)
    assert torch.equal(digits, tok.quantizer.q.indices_to_level_indices(out.codes).long())
    codes, scores = tok.tokenize(video)
    assert torch.equal(codes, out.codes) and torch.allclose(scores, out.scores)
    with pytest.raises(ValueError, match="divisible"):
        tok(torch.randn(1, 3, 3, 32, 32), k=1)
    with pytest.raises(ValueError, match="power-of-two patch"):
        build_tokenizer("tiny", tubelet=2, patch=12)


def test_lfq_option_gives_bits():
    q = Quantizer(8, "lfq", [2] * 6)
    zq, codes, aux = q(torch.randn(2, 8, 1, 2, 2))
    assert zq.shape == (2, 8, 1, 2, 2) and codes.shape == (2, 4) and int(codes.max()) < 64
    assert torch.isfinite(aux)
    assert set(q.digits(codes).unique().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="bits"):
        Quantizer(8, "lfq", [8, 5])


@pytest.mark.parametrize("k", [1, 5, 12, 16])
def test_topk_keeps_exactly_k(k):
    scores = torch.randn(3, 16, generator=torch.Generator().manual_seed(k), requires_grad=True)
    keep = straight_through_topk(scores, k)
    assert torch.equal(keep.detach(), topk_mask(scores.detach(), k))
    assert set(keep.detach().unique().tolist()) <= {0.0, 1.0} and (keep.sum(1) == k).all()
    assert keep.detach()[torch.arange(3)[:, None], scores.topk(k, 1).indices].eq(1).all()
    keep.sum().backward()  # differentiable for every k, also k = N
    with pytest.raises(ValueError):
        straight_through_topk(scores, 0)


def test_topk_gradient_raises_the_tokens_that_help():
    """d/dscore of a loss that rewards keeping token 0: its score gets the gradient that raises it."""
    scores = torch.zeros(1, 8)
    scores[0, :4] = torch.tensor([0.1, 2.0, 1.5, 1.0])  # token 0 is just below the cut (k=3)
    scores.requires_grad_(True)
    keep = straight_through_topk(scores, 3)
    assert keep[0, 0] == 0
    (-keep[0, 0]).backward()
    assert scores.grad[0, 0] < 0  # gradient descent raises token 0's score


def test_topk_noise_explores_below_the_cut_and_keeps_k():
    """Gumbel noise: still exactly k per row, differentiable; tokens just below the cut are kept in
    some draws, far-below ones seldom, the top token most of the time."""
    torch.manual_seed(0)
    scores = torch.linspace(3.0, -3.0, 16).repeat(2000, 1).requires_grad_(True)
    keep = straight_through_topk(scores, 4, noise=0.5)
    assert (keep.detach().sum(1) == 4).all() and set(keep.detach().unique().tolist()) <= {0.0, 1.0}
    rate = keep.detach().mean(0)  # how often each rank is kept
    assert rate[0] > 0.8 and 0.2 < rate[4] < 0.6 and rate[15] < 0.02
    assert (rate[:-1] >= rate[1:] - 0.03).all()  # higher score, kept at least as often
    keep.sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def test_tokenizer_noise_only_while_training():
    torch.manual_seed(0)
    tok = build_tokenizer("tiny", tubelet=2, patch=8, noise=1.0)
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        tok.eval()
        a, b = tok(video, 4, all_tokens=False).keep, tok(video, 4, all_tokens=False).keep
        assert torch.equal(a, b) and torch.equal(a, topk_mask(tok.score(tok.encode(video)), 4))
        tok.train()
        draws = [tok(video, 4, all_tokens=False).keep for _ in range(8)]
    assert any(not torch.equal(d, a) for d in draws)
    assert all(d.sum() == 4 for d in draws)


def test_gradients_reach_the_scorer_through_the_topk(tok):
    tok.zero_grad()
    video = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    out = tok(video, k=2, all_tokens=False)
    out.recon_topk.sub(video).pow(2).mean().backward()
    for name, p in tok.scorer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # and nothing else feeds the scorer: without the top-k its parameters get no gradient
    tok.zero_grad()
    h = tok.encode(video)
    zq, _, _ = tok.quantizer(h)
    tok.decode(zq).pow(2).mean().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in tok.scorer.parameters())


def _reach(tok, frames: int) -> torch.Tensor:
    """|d output frame T-1 / d latent slice 0| of the decoder, GroupNorm removed (its statistics
    couple every place; what is asked here is whether the layers carry content that far)."""
    for mod in list(tok.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.GroupNorm):
                setattr(mod, name, torch.nn.Identity())
    zq = torch.randn(1, 16, frames // 2, 2, 2, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = tok.decode(zq)
    (g,) = torch.autograd.grad(out[:, :, -1].sum(), zq)
    return g[:, :, 0].abs().sum()


def test_decoder_attention_carries_kept_content_across_a_long_clip():
    from mvm.tokenizer.model import LatentAttention, sincos_3d

    torch.manual_seed(0)
    blk = LatentAttention(16)
    x = torch.randn(2, 16, 3, 2, 5)
    assert torch.equal(blk(x), x)  # output projections start at zero: a new block is the identity
    pos = sincos_3d(3, 2, 5, 16)
    assert pos.shape == (30, 16) and torch.unique(pos, dim=0).shape[0] == 30  # every place its own
    # 48 frames = 24 latent slices: beyond the convolutions' reach (about +-10 slices), within attention's
    assert _reach(build_tokenizer("tiny", tubelet=2, patch=8), 48) == 0
    tok = build_tokenizer("tiny", tubelet=2, patch=8, attention_blocks=1)
    for blk in tok.dec_attn:  # trained weights are not zero; give the block some
        torch.nn.init.normal_(blk.proj.weight, std=0.1)
    assert _reach(tok, 48) > 0
    video = torch.randn(1, 3, 6, 16, 16)
    out = tok(video, k=2)
    assert out.recon_topk.shape == out.recon_all.shape == video.shape
    with pytest.raises(ValueError, match="attention_blocks"):
        build_tokenizer("tiny", attention_blocks=-1)


def test_scorer_attention_sees_the_whole_clip():
    """With scorer attention a token's score depends on clip content far beyond the convs' reach."""
    torch.manual_seed(0)
    tok = build_tokenizer("tiny", tubelet=2, patch=8, scorer_attention=1)
    for blk in tok.scorer_attn:
        torch.nn.init.normal_(blk.proj.weight, std=0.1)
    h = torch.randn(1, 16, 24, 2, 2, requires_grad=True)  # encoder latents, 24 time slices
    (g,) = torch.autograd.grad(tok.score(h)[0, -1], h)
    assert g[:, :, 0].abs().sum() > 0  # the last slice's score reads the first slice
    plain = build_tokenizer("tiny", tubelet=2, patch=8)
    (g,) = torch.autograd.grad(plain.score(h)[0, -1], h)
    assert g[:, :, 0].abs().sum() == 0  # convs only: two 3x3x3 layers reach +-2 slices
    video = torch.randn(1, 3, 4, 16, 16)
    out = tok(video, k=2)
    out.recon_topk.pow(2).mean().backward()
    assert all(p.grad is not None for p in tok.scorer_attn.parameters())


def test_config_builds_the_attention_blocks():
    from mvm.config import Config
    from mvm.tokenizer.task import build_from_config

    cfg = Config()
    cfg.tokenizer.attention_blocks, cfg.tokenizer.scorer_attention = 2, 1
    tok = build_from_config(cfg)
    assert len(tok.dec_attn) == 2 and len(tok.scorer_attn) == 1
    assert len(build_from_config(Config()).dec_attn) == 0  # default: the convolutional tokenizer as before


# ------------------------------------------------------------------------------------------------
# The "small" size: a patchify stem instead of full-resolution convolutions


def test_small_tokenizer_has_no_full_resolution_conv_and_keeps_the_token_grid():
    tok = build_tokenizer("small", tubelet=2, patch=8)
    video = torch.randn(1, 3, 4, 32, 32)
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append((m.kernel_size, o.shape[-1])))
             for m in tok.encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    codes, scores = tok.tokenize(video)
    for h in hooks:
        h.remove()
    assert codes.shape == scores.shape == (1, 2 * 4 * 4)  # (T/2) x (32/8) x (32/8): the MAE's grid
    assert all(width <= 32 // 4 for kernel, width in sizes if kernel == (3, 3, 3))  # none at 32 or 16 px
    assert tok(video, k=5).recon_topk.shape == video.shape


def test_small_tokenizer_output_places_each_channel_at_its_pixel():
    """Depth to space: output channel c*s*s + i*s + j of place (y, x) is pixel (y*s + i, x*s + j) of colour c."""
    tok = build_tokenizer("small", tubelet=2, patch=8)
    s = tok.stem
    last = tok.dec_out[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.arange(3 * s * s, dtype=torch.float32))
    zq = torch.zeros(1, 256, 2, 4, 4)  # small's latent width
    out = tok.decode(zq)  # [1, 3, 4, 32, 32]
    c, y, x = 2, 13, 6
    assert out.shape == (1, 3, 4, 32, 32)
    assert out[0, c, 1, y, x].item() == c * s * s + (y % s) * s + (x % s)


# ------------------------------------------------------------------------------------------------
# tokenizer.topk_after: the autoencoder alone first, then the top-k joins the loss


def _loss_setup(**tokenizer: float):
    """A tiny tokenizer task (4 x 16 x 16 clips) with ``tokenizer`` settings, its model, a clip and
    the clip's target pixels: ``(cfg, task, tok, video, mean, std, target)``."""
    from mvm.config import Config
    from mvm.tokenizer.task import TokenizerTask, build_from_config

    cfg = Config()
    cfg.data.frames, cfg.data.size, cfg.model.tubelet, cfg.model.patch = 4, 16, 2, 8
    for key, value in tokenizer.items():
        setattr(cfg.tokenizer, key, value)
    task = TokenizerTask(cfg)
    torch.manual_seed(0)
    tok = build_from_config(cfg)
    video = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1, 1)
    return cfg, task, tok, video, mean, std, (video * std + mean).clamp(0, 1)


def test_topk_after_trains_the_autoencoder_alone_first():
    from mvm.config import ConfigError, load_config

    cfg, task, tok, video, mean, std, target = _loss_setup(topk_after=5)
    before, parts = task.loss(tok, {"video": video}, torch.device("cpu"), step=4)
    assert set(parts) == {"all_mse"}
    # exactly the reconstruction from every token (plus the quantiser's term), by hand
    h = tok.encode(video)
    zq, _, aux = tok.quantizer(h)
    by_hand = (tok.decode(zq) * std + mean - target).pow(2).mean() + aux
    torch.testing.assert_close(before, by_hand)
    before.backward()
    # the scorer takes part (DDP needs every parameter in the graph) but learns nothing yet
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in tok.scorer.parameters())
    assert any(p.grad.abs().sum() > 0 for p in tok.encoder.parameters())
    tok.zero_grad()
    after, parts = task.loss(tok, {"video": video}, torch.device("cpu"), step=5)
    assert set(parts) == {"topk_mse", "all_mse"}
    torch.testing.assert_close(after, parts["topk_mse"] + parts["all_mse"] + aux)
    after.backward()
    assert any(p.grad.abs().sum() > 0 for p in tok.scorer.parameters())
    with pytest.raises(ConfigError, match=r"tokenizer\.topk_after"):
        load_config(None, ["tokenizer.topk_after=-1"])
    with pytest.raises(ConfigError, match=r"tokenizer\.topk_after"):
        load_config(None, ["tokenizer.topk_after=10", "tokenizer.all_weight=0"])


# ------------------------------------------------------------------------------------------------
# tokenizer.motion_weight: a loss on frame-to-frame differences next to the pixel MSE


def test_motion_weight_adds_the_frame_difference_error_by_hand():
    from mvm.config import Config, ConfigError, load_config
    from mvm.tokenizer.task import TokenizerTask

    cfg, task, tok, video, mean, std, target = _loss_setup(motion_weight=3.0)
    recon = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    pix = recon * std + mean
    dt = (pix[:, :, 1:] - pix[:, :, :-1]) - (target[:, :, 1:] - target[:, :, :-1])
    by_hand = (pix - target).pow(2).mean() + 3.0 * dt.pow(2).mean()
    torch.testing.assert_close(task._recon_loss(recon, target), by_hand)
    # a static error (the same at every frame) costs only its pixel MSE; a moving one costs more
    static = target + 0.1
    moving = target + 0.1 * torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 1, 4, 1, 1)
    norm = lambda p: (p - mean) / std  # noqa: E731 - pixels back to the model's space
    assert task._recon_loss(norm(static), target).item() == pytest.approx(0.01, rel=1e-4)
    assert task._recon_loss(norm(moving), target).item() == pytest.approx(0.01 + 3.0 * 0.04, rel=1e-4)
    # wired into the training loss: both reconstructions carry the term, and the scorer learns
    loss, parts = task.loss(tok, {"video": video}, torch.device("cpu"), step=0)
    out_w0 = Config()
    out_w0.data, out_w0.model = cfg.data, cfg.model
    plain, plain_parts = TokenizerTask(out_w0).loss(tok, {"video": video}, torch.device("cpu"), step=0)
    assert parts["topk_mse"] > plain_parts["topk_mse"] and parts["all_mse"] > plain_parts["all_mse"]
    loss.backward()
    assert any(p.grad.abs().sum() > 0 for p in tok.scorer.parameters())
    with pytest.raises(ConfigError, match=r"tokenizer\.motion_weight"):
        load_config(None, ["tokenizer.motion_weight=-1"])


def test_the_training_step_makes_no_tensor_from_host_data(host_made):
    """Once warm, a tokenizer training step builds no tensor from Python data (on a GPU, each
    would be a copy to the device inside the step; the normalisation constants made six)."""
    cfg, task, tok, video, *_ = _loss_setup(motion_weight=1.0)
    cpu = torch.device("cpu")
    task.loss(tok, {"video": video}, cpu, step=0)[0].backward()  # warm
    assert host_made(lambda: task.loss(tok, {"video": video}, cpu, step=0)[0].backward()) == 0


def test_the_training_loader_sends_uint8_clips_and_the_loss_is_that_of_the_normalised_ones(tmp_path):
    """As for pretraining: the loader sends the resized uint8 pixels, the step normalises them on
    its device, and the loss is bit for bit the loss of the same clips sent normalised."""
    from mvm.data.synth import make_synthetic
    from mvm.data.transforms import normalise_pixels
    from mvm.train.distributed import DistInfo

    cfg, task, tok, *_ = _loss_setup()
    make_synthetic(tmp_path, clips=2, val_clips=0, frames=8, size=16, seed=1)
    cfg.data.train, cfg.data.workers, cfg.data.cache_mb, cfg.data.stride, cfg.optim.batch_size = (
        str(tmp_path / "train.csv"), 0, 0, 1, 2)
    _, loader = task.build_loader(0, DistInfo())
    batch = next(iter(loader))
    assert batch["video"].dtype == torch.uint8 and batch["video"].shape == (2, 3, 4, 16, 16)
    normalised = dict(batch, video=normalise_pixels(batch["video"], cfg.data.mean, cfg.data.std))
    losses = []
    for b in (batch, normalised):
        torch.manual_seed(5)  # the same top-k noise for both
        losses.append(task.loss(tok, b, torch.device("cpu"), step=0)[0])
    assert torch.equal(losses[0], losses[1])

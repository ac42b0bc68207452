"""Layers, encoder, autoencoder, classifier and named sizes.

Every named size is checked twice: its parameter count is measured on the meta device (no memory,
no time) against the published size, and a forward/backward pass runs on a 4x32x32 clip. tiny,
small and base run at full depth; large, huge and giant have too many parameters for a quick CPU
test, so they run a depth-truncated copy (2 encoder blocks, 1 decoder block) at their full width.
"""

from __future__ import annotations

import math

import pytest
import torch

from mvm.grid import TokenGrid
from mvm.masking.base import mask_to_indices
from mvm.models import VARIANTS, VideoClassifier, build_classifier, build_encoder, build_mae, get_variant
from mvm.models.layers import Attention, Block
from mvm.models.pos_embed import (
    get_sinusoid_encoding_table,
    interpolate_pos_embed,
    sinusoid_rows,
    sinusoid_table,
)
from mvm.targets import masked_mse, norm_pix_target

# Published encoder sizes in millions (VideoMAE table; VideoMAE V2 for giant, ViT-g/14).
PUBLISHED_M = {"small": 22, "base": 87, "large": 305, "huge": 633, "giant": 1011}
FULL_DEPTH = {"tiny", "small", "base"}


def _masks(b: int, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        mask[i, torch.randperm(n, generator=g)[:k]] = True
    return mask_to_indices(~mask), mask_to_indices(mask)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_count_on_meta(name: str) -> None:
    patch = 14 if name == "giant" else 16
    with torch.device("meta"):
        enc = build_encoder(name, patch=patch)
        mae = build_mae(name, patch=patch)
    n_enc = sum(p.numel() for p in enc.parameters()) / 1e6
    n_mae = sum(p.numel() for p in mae.parameters()) / 1e6
    assert n_mae > n_enc
    if name in PUBLISHED_M:
        assert n_enc == pytest.approx(PUBLISHED_M[name], rel=0.02), f"{name}: {n_enc:.1f}M"
    else:
        assert 2 < n_enc < 4  # tiny: ours, ~3M


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_backward_every_size(name: str) -> None:
    torch.manual_seed(0)
    trunc = {} if name in FULL_DEPTH else {"depth": 2, "decoder_depth": 1}
    model = build_mae(name, tubelet=2, patch=16, drop_path=0.1, **trunc)
    video = torch.randn(2, 3, 4, 32, 32)
    visible_idx, decode_idx = _masks(2, 8, 6)
    pred = model(video, visible_idx, decode_idx)
    assert pred.shape == (2, 6, 2 * 16 * 16 * 3)
    loss = masked_mse(pred, norm_pix_target(video, 2, 16, [0.5] * 3, [0.25] * 3), decode_idx)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.dim == get_variant(name).dim


def test_names_aliases_and_overrides() -> None:
    assert get_variant("b") is VARIANTS["base"] and get_variant("ViT-L") is VARIANTS["large"]
    assert build_mae("tiny", depth=1, decoder_depth=1).encoder.depth == 1
    assert get_variant("giant").mlp_ratio * 1408 == pytest.approx(6144)
    with pytest.raises(KeyError, match="unknown model size"):
        build_mae("enormous")
    with pytest.raises(TypeError, match="unknown model override"):
        build_mae("tiny", widht=3)
    from mvm.config import ConfigError, load_config

    assert load_config(None, ["model.name=base"]).model.name == "base"
    with pytest.raises(ConfigError, match="model.name"):
        load_config(None, ["model.name=enormous"])


def test_sinusoid_table_matches_transformers() -> None:
    modeling = pytest.importorskip("transformers.models.videomae.modeling_videomae")
    for n, d in ((392, 384), (8, 64), (37, 96)):
        assert torch.equal(get_sinusoid_encoding_table(n, d), modeling.get_sinusoid_encoding_table(n, d))


def test_encoder_runs_any_clip_length_and_gathers_visible_tokens() -> None:
    torch.manual_seed(0)
    enc = build_encoder("tiny", tubelet=2, patch=16, depth=2).eval()
    for frames in (16, 32):
        video = torch.randn(1, 3, frames, 32, 32)
        assert enc(video).shape == (1, frames // 2 * 4, 192)
        assert enc.grid_for(video) == TokenGrid.from_clip(frames, 32, 2, 16)
    video = torch.randn(2, 3, 4, 32, 32)
    all_idx = torch.arange(8).expand(2, -1)
    torch.testing.assert_close(enc(video, all_idx), enc(video))
    # One block of attention over fewer tokens differs, but visible-only equals "embed all, keep some".
    with torch.no_grad():
        x = enc.patch_embed.proj(video).flatten(2).transpose(1, 2) + get_sinusoid_encoding_table(8, 192)
        idx = torch.tensor([[0, 5, 7], [1, 2, 6]])
        x = torch.gather(x, 1, idx[..., None].expand(-1, -1, 192))
        for blk in enc.blocks:
            x = blk(x)
        torch.testing.assert_close(enc.norm(x), enc(video, idx))


def test_learned_position_table_is_interpolated() -> None:
    enc = build_encoder("tiny", tubelet=2, patch=16, depth=1)
    enc.use_learned_pos_embed(torch.randn(1, 2 * 2 * 2, 192), (2, 2, 2))
    assert enc(torch.randn(1, 3, 8, 48, 32)).shape == (1, 4 * 3 * 2, 192)
    assert "pos_embed" in dict(enc.named_parameters())
    # A table linear in t stays linear (trilinear interpolation), and same grid is the identity.
    t = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 2, 3).reshape(1, 16, 3)
    out = interpolate_pos_embed(t, (4, 2, 2), (8, 2, 2)).view(8, 2, 2, 3)[:, 0, 0, 0]
    assert torch.all(out[1:] >= out[:-1]) and out[0] == 0 and out[-1] == 3
    assert interpolate_pos_embed(t, (4, 2, 2), (4, 2, 2)) is t
    with pytest.raises(ValueError, match="rows"):
        interpolate_pos_embed(t, (4, 2, 3), (4, 2, 2))


def test_attention_matches_naive_formula() -> None:
    torch.manual_seed(0)
    attn = Attention(32, 4)
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    x = torch.randn(2, 5, 32)
    w = attn.qkv.weight
    q = x @ w[:32].T + attn.q_bias
    k = x @ w[32:64].T
    v = x @ w[64:].T + attn.v_bias
    split = lambda t: t.view(2, 5, 4, 8).transpose(1, 2)  # noqa: E731
    a = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(8), -1) @ split(v)
    ref = attn.proj(a.transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)
    assert Attention(32, 4, qkv_bias=False).q_bias is None
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, 4)


def test_block_layer_scale_and_drop_path() -> None:
    torch.manual_seed(0)
    blk = Block(16, 2, 64, init_values=1e-5)
    assert blk.gamma_1.shape == (16,)
    x = torch.randn(3, 4, 16)
    assert (blk(x) - x).abs().max() < 1e-3  # tiny layer scale: near identity
    dp = Block(16, 2, 64, drop_path=0.5)
    dp.train()
    outs = {tuple(dp(x).flatten()[:4].tolist()) for _ in range(8)}
    assert len(outs) > 1
    dp.eval()
    torch.testing.assert_close(dp(x), dp(x))


def test_decode_order_follows_decode_idx() -> None:
    """Predictions come back in decode_idx order, whatever that order is."""
    torch.manual_seed(0)
    model = build_mae("tiny", patch=16, depth=2, decoder_depth=1).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    visible_idx, decode_idx = _masks(2, 8, 5)
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        a = model(video, visible_idx, decode_idx)
        b = model(video, visible_idx, decode_idx[:, perm])
    torch.testing.assert_close(b, a[:, perm], rtol=1e-5, atol=1e-5)
    # A subset of the masked tokens (decoder masking) is fine too.
    assert model(video, visible_idx, decode_idx[:, :2]).shape == (2, 2, 1536)


def test_classifier_layout_and_backward() -> None:
    torch.manual_seed(0)
    clf = build_classifier("tiny", num_classes=5, patch=16, depth=2, head_dropout=0.1)
    assert isinstance(clf, VideoClassifier) and isinstance(clf.encoder.norm, torch.nn.Identity)
    assert {"fc_norm.weight", "head.weight", "head.bias"} <= set(clf.state_dict())
    logits = clf(torch.randn(3, 3, 4, 32, 32))
    assert logits.shape == (3, 5)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 4])).backward()
    assert torch.isfinite(clf.head.weight.grad).all()


def test_motion_head_predicts_one_row_per_visible_token() -> None:
    torch.manual_seed(0)
    model = build_mae("tiny", patch=16, depth=2, decoder_depth=1, motion_dim=2)
    video = torch.randn(2, 3, 4, 32, 32)
    visible_idx, decode_idx = _masks(2, 8, 5)
    pred, motion = model(video, visible_idx, decode_idx, with_motion=True)
    assert pred.shape == (2, 5, 1536) and motion.shape == (2, 3, 2)
    # the flag only adds the head's output: pixels are the same either way
    torch.testing.assert_close(model(video, visible_idx, decode_idx), pred)
    motion.square().mean().backward()  # the motion loss trains the encoder, not the decoder
    assert model.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.decoder.head.weight.grad is None
    with pytest.raises(ValueError, match="motion_dim"):
        build_mae("tiny", patch=16, depth=1, decoder_depth=1)(video, visible_idx, decode_idx, with_motion=True)


def test_visible_only_embedding_equals_conv_then_gather() -> None:
    """Embedding only the visible tubelets gives the conv's numbers and the conv's weight gradient."""
    torch.manual_seed(0)
    enc = build_encoder("tiny", tubelet=2, patch=16, depth=1)
    video = torch.randn(2, 3, 8, 48, 32)  # 4x3x2 grid
    idx = torch.stack([torch.randperm(24)[:7] for _ in range(2)])
    fast = enc.embed(video, idx)
    ref = torch.gather(enc.embed(video), 1, idx[..., None].expand(-1, -1, 192))
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    w = enc.patch_embed.proj.weight
    g_fast = torch.autograd.grad(fast.square().sum(), (w, enc.patch_embed.proj.bias))
    g_ref = torch.autograd.grad(ref.square().sum(), (w, enc.patch_embed.proj.bias))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # The learned-table path takes the same route.
    enc.use_learned_pos_embed(torch.randn(1, 24, 192), (4, 3, 2))
    torch.testing.assert_close(enc.embed(video, idx),
                               torch.gather(enc.embed(video), 1, idx[..., None].expand(-1, -1, 192)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim", [64, 192, 384, 768])
def test_sinusoid_rows_are_the_table_rows_bit_for_bit(dim: int) -> None:
    """Positions of the visible / decoded tokens without the [N, dim] table change no number."""
    n = 12544  # a 128-frame clip at 224 px
    idx = torch.randint(0, n, (2, 300), generator=torch.Generator().manual_seed(dim))
    idx[0, 0], idx[1, -1] = 0, n - 1
    table = get_sinusoid_encoding_table(n, dim)[0]
    assert torch.equal(sinusoid_rows(idx, dim, torch.float32), table[idx])
    assert torch.equal(sinusoid_rows(idx, dim, torch.bfloat16), table.to(torch.bfloat16)[idx])


def test_sinusoid_table_is_cached_per_device_and_dtype() -> None:
    a = sinusoid_table(40, 64, "cpu", torch.float32)
    assert torch.equal(a, get_sinusoid_encoding_table(40, 64)[0])
    assert sinusoid_table(40, 64, torch.device("cpu"), torch.float32) is a  # no rebuild per forward
    b = sinusoid_table(40, 64, "cpu", torch.bfloat16)
    assert b.dtype == torch.bfloat16 and torch.equal(b, a.to(torch.bfloat16))


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_checkpointing_gives_the_same_gradients(drop_path: float) -> None:
    """Recomputing blocks in backward changes no number (stochastic depth draws the same masks)."""
    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    visible_idx, decode_idx = _masks(2, 8, 5)
    grads = []
    for on in (False, True):
        torch.manual_seed(0)
        model = build_mae("tiny", patch=16, depth=2, decoder_depth=2, drop_path=drop_path, checkpointing=on)
        assert model.checkpointing is on and model.encoder.checkpointing is on and model.decoder.checkpointing is on
        torch.manual_seed(5)  # same stochastic-depth draws in both runs
        loss = model(video, visible_idx, decode_idx).square().mean()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=0, atol=0, msg=name)
    model.checkpointing = False  # switchable on a built model
    assert not model.encoder.checkpointing and not model.decoder.checkpointing
    assert build_classifier("tiny", 3, patch=16, depth=1, checkpointing=True).encoder.checkpointing


def test_cpu_bf16_attention_paths_agree() -> None:
    """Short bf16 sequences on CPU take explicit matmuls; long ones and fp32 take SDPA: same maths."""
    from mvm.models import layers

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 3, 40, 16, generator=g).unbind(0)
    ref = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    torch.testing.assert_close(layers.attention(q, k, v).double(), ref, rtol=1e-5, atol=1e-5)  # fp32: SDPA
    short = layers.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())  # explicit matmuls
    torch.testing.assert_close(short.double(), ref, rtol=0, atol=3e-2)
    old = layers.CPU_MATH_ATTENTION_MAX_SCORES
    try:
        layers.CPU_MATH_ATTENTION_MAX_SCORES = 0  # force the SDPA path
        flash = layers.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    finally:
        layers.CPU_MATH_ATTENTION_MAX_SCORES = old
    torch.testing.assert_close(flash.double(), ref, rtol=0, atol=3e-2)


def _live_peak_bytes(fn) -> int:
    """Peak of live CPU tensor bytes while ``fn()`` runs (torch.profiler's allocation events)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    cur = peak = 0
    for _, size in sorted(events):
        cur += size
        peak = max(peak, cur)
    return peak


@pytest.mark.parametrize("drop_path", [0.0, 0.3])
def test_recompute_chunks_gives_the_same_loss_and_gradients(drop_path: float) -> None:
    """Recomputing blocks in pieces (attention head by head, then 3 uneven MLP chunks) changes no
    value here; the weight gradients sum over the pieces, so they agree to float rounding."""
    from mvm.models.layers import set_recompute_chunks

    video = torch.randn(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    visible_idx, decode_idx = _masks(2, 8, 5)
    losses, grads = [], []
    for chunks in (0, 3):
        torch.manual_seed(0)
        model = build_mae("tiny", patch=16, depth=2, decoder_depth=2, drop_path=drop_path, checkpointing=True)
        set_recompute_chunks(model, chunks)
        torch.manual_seed(5)
        loss = model(video, visible_idx, decode_idx).square().mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert torch.equal(losses[0], losses[1])
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_recompute_chunks_lowers_the_backward_peak_of_a_checkpointed_block() -> None:
    """One wide block over 512 tokens: recomputed whole, its backward holds the MLP's hidden
    activations and their gradients for every token at once; in 4 pieces, a quarter of them."""
    from mvm.models.encoder import run_blocks

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([Block(64, 4, 512, init_values=0.1)])
    x = torch.randn(1, 512, 64, requires_grad=True)
    peaks, grads = {}, {}
    for chunks in (0, 4):
        blocks[0].recompute_chunks = chunks
        x.grad = None
        peaks[chunks] = _live_peak_bytes(lambda: run_blocks(blocks, x, True).square().sum().backward())
        grads[chunks] = x.grad.clone()
    hidden = 512 * 512 * 4  # one [1, 512, 512] float32 hidden activation
    assert peaks[0] - peaks[4] > 1.5 * hidden, peaks
    torch.testing.assert_close(grads[4], grads[0], rtol=1e-5, atol=1e-6)


def test_attention_head_groups_put_together_are_all_heads() -> None:
    """Heads computed in groups (the last one smaller) are the heads computed at once, and the qkv
    weight and biases get their gradients back through the groups."""
    torch.manual_seed(0)
    attn = Attention(48, 6)
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 10, 48)
    full = attn.heads_out(x)  # [2, 6, 10, 8]
    (g_full,) = torch.autograd.grad(full.square().sum(), attn.qkv.weight)
    groups = attn.head_groups(4)  # heads 0-3, then 4-5
    assert [w.shape[1] for w, _ in groups] == [4, 2] and groups[0][1].shape == (3, 4, 8)
    parts = torch.cat([attn.heads_out(x, w, b) for w, b in groups], 1)
    torch.testing.assert_close(parts, full, rtol=1e-6, atol=1e-6)
    grads = torch.autograd.grad(parts.square().sum(), (attn.qkv.weight, attn.q_bias, attn.v_bias))
    torch.testing.assert_close(grads[0], g_full, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in grads)

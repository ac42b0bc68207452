"""The LVMAE video tokenizer: MAGVIT-style 3D-conv autoencoder, FSQ codes, token scorer, top-k.

    clip [B, 3, T, H, W] --encoder (res blocks; log2(patch) stride-2 stages in space, the first
        log2(tubelet) of them also in time)--> h [B, D, t, h, w]   (t, h, w) = the MAE's token grid
    h --quantizer--> zq [B, D, t, h, w], codes [B, N]
    h --scorer (small CNN)--> scores [B, N]
    zq * keep ++ keep --decoder (mirrors the encoder, nearest upsampling)--> recon [B, 3, T, H, W]

``keep`` is all ones (reconstruct from every token) or the straight-through top-k of the scores
(``topk.py``): tokens outside it are zeroed and the decoder is told which (the extra channel), so
it must reconstruct the clip from the kept tokens alone and the scorer learns which ones carry it.

``attention_blocks`` > 0 adds self-attention blocks over the whole latent grid right after the
decoder's input convolutions, so content kept at any time slice (or place) can reach every other:
the 3x3x3 convolutions alone reach about +-10 latent time slices, fewer in effect, which is less
than a long clip has (16 slices at 32 frames, 64 at 128). Without it the decoder cannot carry a
kept background token across the clip, and the cheapest use of the budget (each static place once,
the rest on what moves) is out of its reach. ``scorer_attention`` > 0 does the same for the
scorer: a local scorer gives every time slice of a static place nearly the same score, so the top-k
keeps such a place at many slices or at none; seeing the whole clip, it can keep it once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mvm.grid import TokenGrid
from mvm.tokenizer.quantize import Quantizer
from mvm.tokenizer.topk import straight_through_topk


@dataclass(frozen=True)
class TokenizerSize:
    """One named size: base channels, per-stage channel multipliers and residual blocks (the last
    entry repeats for deeper grids), latent channels and scorer width. MAGVIT-v1 base, for scale:
    64, (1, 2, 2, 4), 2 blocks, 256.

    ``stem`` > 1 replaces the first log2(stem) halvings of space by one patchify convolution
    (kernel = stride = stem in space, 1 in time) and the decoder's last ones by a depth-to-space
    output, so no 3x3x3 convolution runs at full resolution: at 224 px those dominate the cost.
    """

    channels: int
    mults: tuple[int, ...]
    blocks: tuple[int, ...]
    embed_dim: int
    scorer: int
    stem: int = 1


TOKENIZER_SIZES: dict[str, TokenizerSize] = {
    # ours, for a 2-core CPU: no residual block at full resolution, where it would cost most
    "tiny": TokenizerSize(8, (1, 2, 4, 8), (0, 1, 1), 16, 16),
    "base": TokenizerSize(64, (1, 2, 2, 4), (2,), 256, 64),  # MAGVIT-v1 base widths, GPU
    # ours, GPU: base's latent width and blocks after a 4x4 patchify stem; about 1/16 of base's
    # FLOPs at 224 px (benchmarks/bench_lvmae_scoring.py), so scoring costs less than the MAE step
    "small": TokenizerSize(64, (1, 2, 4), (2,), 256, 64, stem=4),
}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c, eps=1e-6)


class ResBlock3d(nn.Module):
    """GroupNorm-SiLU-Conv3d twice plus a (1x1x1-projected) skip: ``[B, cin, ...] -> [B, cout, ...]``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv3d(cin, cout, 3, padding=1),
                                  _norm(cout), nn.SiLU(), nn.Conv3d(cout, cout, 3, padding=1))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _stages(tubelet: int, patch: int, stem: int = 1) -> list[int]:
    """Temporal stride of each stage (2 for the first log2(tubelet), then 1); one stage per 2x in
    space after a patchify stem of ``stem`` (1: none)."""
    for name, v in (("tubelet", tubelet), ("patch", patch), ("stem", stem)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"the tokenizer needs a power-of-two {name}, got {v}")
    if stem > patch:
        raise ValueError(f"a tokenizer stem of {stem} px does not fit patch={patch}")
    n_sp, n_t = int(math.log2(patch // stem)), int(math.log2(tubelet))
    if n_t > n_sp:
        raise ValueError(f"tubelet={tubelet} needs more downsampling stages than patch={patch} gives")
    return [2 if i < n_t else 1 for i in range(n_sp)]


def sincos_3d(t: int, h: int, w: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed factorised sine-cosine positions for any ``(t, h, w)`` grid: ``[t*h*w, dim]`` in (t, h, w)
    order; half the channels encode time, a quarter each height and width (``dim`` divisible by 8)."""
    if dim % 8:
        raise ValueError(f"positions need a width divisible by 8, got {dim}")

    def table(n: int, d: int) -> torch.Tensor:  # [n, d]
        freq = 1.0 / 10000 ** (torch.arange(d // 2, device=device, dtype=torch.float32) / (d // 2))
        ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * freq[None]
        return torch.cat([ang.sin(), ang.cos()], dim=1)

    dt, ds = dim // 2, dim // 4
    pt = table(t, dt)[:, None, None].expand(t, h, w, dt)
    ph = table(h, ds)[None, :, None].expand(t, h, w, ds)
    pw = table(w, ds)[None, None, :].expand(t, h, w, ds)
    return torch.cat([pt, ph, pw], dim=-1).reshape(t * h * w, dim)


class LatentAttention(nn.Module):
    """Pre-norm transformer block (self-attention + MLP) over every position of a latent grid:
    ``[B, C, t, h, w] -> [B, C, t, h, w]``, with fixed 3D sine-cosine positions added to the queries
    and keys' input, so it works for any frame count. The output projections start at zero, so a
    new block starts as the identity."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"latent width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        for lin in (self.proj, self.mlp[2]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tok = x.flatten(2).transpose(1, 2)  # [B, N, C]
        y = self.norm1(tok) + sincos_3d(t, h, w, c, x.device).to(tok.dtype)
        q, k, v = self.qkv(y).view(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, C/heads]
        tok = tok + self.proj(att.transpose(1, 2).reshape(b, -1, c))
        tok = tok + self.mlp(self.norm2(tok))
        return tok.transpose(1, 2).reshape(b, c, t, h, w)


class VideoTokenizer(nn.Module):
    """MAGVIT-style tokenizer whose latent grid is the MAE token grid.

    Args:
        size: a :class:`TokenizerSize`.
        tubelet, patch: the MAE's token geometry (powers of two).
        quantizer: ``"fsq"`` or ``"lfq"``; levels: its levels (see :class:`Quantizer`).
        temperature: sigmoid width of the straight-through top-k.
        noise: Gumbel noise on the scores for the top-k while training (``straight_through_topk``);
            none in eval mode, so validation and a frozen tokenizer's scores see the plain ranking.
        attention_blocks: self-attention blocks over the whole latent grid in the decoder (0: convs only).
        scorer_attention: the same in the scorer, before its last (1x1x1) layer.
    """

    def __init__(self, size: TokenizerSize, tubelet: int = 2, patch: int = 8, quantizer: str = "fsq",
                 levels: list[int] | tuple[int, ...] = (8, 5, 5, 5), temperature: float = 0.5,
                 attention_blocks: int = 0, scorer_attention: int = 0, noise: float = 0.0) -> None:
        super().__init__()
        self.tubelet, self.patch, self.temperature, self.noise = tubelet, patch, temperature, noise
        self.stem = size.stem
        strides = _stages(tubelet, patch, size.stem)
        mults = [size.mults[min(i, len(size.mults) - 1)] for i in range(len(strides) + 1)]
        blocks = [size.blocks[min(i, len(size.blocks) - 1)] for i in range(len(strides))]
        chans = [size.channels * m for m in mults]
        st0 = (1, size.stem, size.stem)
        enc: list[nn.Module] = [nn.Conv3d(3, chans[0], 3, padding=1) if size.stem == 1 else
                                nn.Conv3d(3, chans[0], st0, stride=st0)]  # patchify stem
        for i, st in enumerate(strides):
            enc += [ResBlock3d(chans[i], chans[i]) for _ in range(blocks[i])]
            enc.append(nn.Conv3d(chans[i], chans[i + 1], 3, stride=(st, 2, 2), padding=1))
        enc += [ResBlock3d(chans[-1], chans[-1]), _norm(chans[-1]), nn.SiLU(),
                nn.Conv3d(chans[-1], size.embed_dim, 1)]
        self.encoder = nn.Sequential(*enc)
        self.quantizer = Quantizer(size.embed_dim, quantizer, levels)
        self.scorer = nn.Sequential(nn.Conv3d(size.embed_dim, size.scorer, 3, padding=1), nn.SiLU(),
                                    nn.Conv3d(size.scorer, size.scorer, 3, padding=1), nn.SiLU(),
                                    nn.Conv3d(size.scorer, 1, 1))
        self.dec_in = nn.Conv3d(size.embed_dim + 1, chans[-1], 3, padding=1)  # +1: the keep channel
        self.dec_mid = ResBlock3d(chans[-1], chans[-1])
        self.scorer_attn = nn.ModuleList(LatentAttention(size.scorer) for _ in range(scorer_attention))
        self.dec_attn = nn.ModuleList(LatentAttention(chans[-1]) for _ in range(attention_blocks))
        self.up_strides = list(reversed(strides))
        ups = []
        for j, _ in enumerate(self.up_strides):
            i = len(strides) - 1 - j  # mirror of encoder stage i
            ups.append(nn.ModuleList([nn.Conv3d(chans[i + 1], chans[i], 3, padding=1),
                                      *[ResBlock3d(chans[i], chans[i]) for _ in range(blocks[i])]]))
        self.ups = nn.ModuleList(ups)
        # stem > 1: each output place predicts its stem x stem pixels (depth to space in decode)
        self.dec_out = nn.Sequential(_norm(chans[0]), nn.SiLU(),
                                     nn.Conv3d(chans[0], 3 * size.stem ** 2, 3, padding=1))

    @property
    def levels(self) -> list[int]:
        return self.quantizer.levels

    def grid_for(self, video: torch.Tensor) -> TokenGrid:
        """The token grid of a ``[B, 3, T, H, W]`` clip (refuses clips that do not divide)."""
        return TokenGrid.from_clip(video.shape[2], tuple(video.shape[3:]), self.tubelet, self.patch)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W]`` normalised clip -> latents ``[B, D, t, h, w]`` on the token grid."""
        self.grid_for(video)
        return self.encoder(video)

    def score(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder latents ``[B, D, t, h, w]`` -> one score per token ``[B, N]`` (higher = keep)."""
        x = self.scorer[:-1](h)
        for blk in self.scorer_attn:
            x = blk(x)
        return self.scorer[-1](x).flatten(1).float()

    def decode(self, zq: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Quantised latents ``[B, D, t, h, w]`` and ``keep`` ``[B, N]`` (None: all) -> clip ``[B, 3, T, H, W]``."""
        b, _, t, h, w = zq.shape
        keep = zq.new_ones(b, t * h * w) if keep is None else keep
        k = keep.to(zq.dtype).view(b, 1, t, h, w)
        x = self.dec_mid(self.dec_in(torch.cat([zq * k, k], dim=1)))
        for blk in self.dec_attn:
            x = blk(x)
        for st, (conv, *blocks) in zip(self.up_strides, self.ups, strict=True):
            x = conv(F.interpolate(x, scale_factor=(st, 2, 2), mode="nearest"))
            for blk in blocks:
                x = blk(x)
        x = self.dec_out(x)
        if self.stem > 1:  # [B, 3*s*s, T, h, w] -> [B, 3, T, h*s, w*s]
            b, _, t, h, w = x.shape
            s = self.stem
            x = x.view(b, 3, s, s, t, h, w).permute(0, 1, 4, 5, 2, 6, 3).reshape(b, 3, t, h * s, w * s)
        return x

    @torch.no_grad()
    def tokenize(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a frozen tokenizer gives the MAE: codes ``[B, N]`` long and scores ``[B, N]`` float32."""
        h = self.encode(video)
        _, codes, _ = self.quantizer(h)
        return codes, self.score(h)

    def forward(self, video: torch.Tensor, k: int, all_tokens: bool = True, topk: bool = True) -> TokenizerOutput:
        """Encode, quantise, score, keep the top ``k`` tokens, decode.

        Args:
            video: ``[B, 3, T, H, W]`` normalised clip.
            k: tokens kept per clip by the differentiable top-k.
            all_tokens: also decode from every token (``recon_all``).
            topk: decode from the top-k (False: ``recon_topk`` is None and ``keep`` all ones; the
                scores are still computed, so every parameter takes part, as DDP requires).
        """
        h = self.encode(video)
        zq, codes, aux = self.quantizer(h)
        scores = self.score(h)
        if not topk:
            return TokenizerOutput(self.decode(zq), None, scores, torch.ones_like(scores), codes, aux)
        keep = straight_through_topk(scores, k, self.temperature, self.noise if self.training else 0.0)
        recon_topk = self.decode(zq, keep)
        recon_all = self.decode(zq) if all_tokens else None
        return TokenizerOutput(recon_all, recon_topk, scores, keep, codes, aux)


@dataclass
class TokenizerOutput:
    """``recon_all``/``recon_topk``: ``[B, 3, T, H, W]`` (normalised space; either may be None);
    ``scores``, ``keep``: ``[B, N]``; ``codes``: ``[B, N]`` long; ``aux``: scalar."""

    recon_all: torch.Tensor | None
    recon_topk: torch.Tensor | None
    scores: torch.Tensor
    keep: torch.Tensor
    codes: torch.Tensor
    aux: torch.Tensor


def build_tokenizer(name: str = "tiny", tubelet: int = 2, patch: int = 8, quantizer: str = "fsq",
                    levels: list[int] | tuple[int, ...] = (8, 5, 5, 5), temperature: float = 0.5,
                    attention_blocks: int = 0, scorer_attention: int = 0, noise: float = 0.0) -> VideoTokenizer:
    """A :class:`VideoTokenizer` of a named size (``tiny``, ``base`` or ``small``)."""
    if name not in TOKENIZER_SIZES:
        raise KeyError(f"unknown tokenizer size '{name}'; known: {', '.join(TOKENIZER_SIZES)}")
    for key, v in (("attention_blocks", attention_blocks), ("scorer_attention", scorer_attention)):
        if v < 0:
            raise ValueError(f"tokenizer.{key} must be >= 0, got {v}")
    return VideoTokenizer(TOKENIZER_SIZES[name], tubelet, patch, quantizer, levels, temperature, attention_blocks,
                          scorer_attention, noise)

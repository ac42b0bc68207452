"""Transformer layers with the parameter layout of the original VideoMAE.

Names and shapes match VideoMAE's ``modeling_pretrain.py`` / ``modeling_finetune.py`` one to one
(``norm1``, ``attn.qkv`` without bias plus separate ``attn.q_bias`` / ``attn.v_bias``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``, ``gamma_1`` / ``gamma_2``), so original checkpoints load with no
renaming and transformers' split query/key/value weights map by concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p`` (training only)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


#: On CPU in bf16, attention over at most this many scores per sample (heads x N x N) runs as two
#: matmuls and a softmax (the original VideoMAE's formulation) instead of
#: ``F.scaled_dot_product_attention``: torch's bf16 CPU flash kernel is about 1.7-2.8x slower
#: than that at head dim 64 (measured, docs/benchmarks.md), and the explicit scores of a 16-frame
#: decoder (3 x 1568^2 bf16, 15 MB per clip) are cheap to hold. Longer clips keep the flash kernel,
#: whose memory grows with N rather than N^2; fp32 keeps it too (faster there); CUDA always uses SDPA.
CPU_MATH_ATTENTION_MAX_SCORES = 1 << 24


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` for ``[B, h, N, d]`` inputs -> ``[B, h, N, d]`` (may be a strided view).

    SDPA (flash / memory-efficient kernels) on GPUs, in fp32 and for long sequences; explicit
    matmuls for short bf16 sequences on CPU, where they are faster (:data:`CPU_MATH_ATTENTION_MAX_SCORES`).
    """
    _, h, n, d = q.shape
    if (q.device.type != "cpu" or q.dtype not in (torch.bfloat16, torch.float16)
            or h * n * n > CPU_MATH_ATTENTION_MAX_SCORES):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    scores = torch.matmul(q * d ** -0.5, k.transpose(-2, -1))  # [B, h, N, N]
    probs = scores.softmax(-1).to(v.dtype)
    if dropout_p:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)


class Attention(nn.Module):
    """Multi-head self-attention (:func:`attention`: ``F.scaled_dot_product_attention`` on GPU and for long clips).

    The key projection has no bias (a key bias cancels in the softmax), as in VideoMAE: the qkv
    bias is ``cat(q_bias, 0, v_bias)``.
    """

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_drop: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.heads = heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim]`` -> ``[B, N, dim]``."""
        b, n, d = x.shape
        return self.proj(self.heads_out(x).transpose(1, 2).reshape(b, n, d))

    def qkv_bias(self) -> torch.Tensor | None:
        """``[3 * dim]``: ``cat(q_bias, 0, v_bias)``, or None without biases."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def head_groups(self, per: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The qkv weight and bias of each group of ``per`` heads (the last may have fewer):
        views ``[3, g, dim/h, dim]`` and ``[3, g, dim/h]`` for :meth:`heads_out`, cut with one
        ``split`` so that their gradients come back through one node."""
        d = self.qkv.weight.shape[1]
        hd = d // self.heads
        weights = self.qkv.weight.view(3, self.heads, hd, d).split(per, 1)
        bias = self.qkv_bias()
        biases = bias.view(3, self.heads, hd).split(per, 1) if bias is not None else [None] * len(weights)
        return list(zip(weights, biases))

    def heads_out(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output before ``proj``: ``[B, N, dim]`` -> ``[B, g, N, dim/h]``.

        All heads (``g = h``) by default; with a group's ``weight`` and ``bias`` from
        :meth:`head_groups`, those heads alone. Heads do not interact before ``proj``, so they
        can be computed group by group (the pieces of ``Block.forward_pieces``).
        """
        b, n, d = x.shape
        if weight is None:
            weight, bias = self.qkv.weight, self.qkv_bias()
        else:
            weight, bias = weight.reshape(-1, d), None if bias is None else bias.reshape(-1)
        qkv = F.linear(x, weight, bias)
        q, k, v = qkv.view(b, n, 3, -1, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x [B, g, N, d/h]
        return attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)  # [B, g, N, d/h]


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` with hidden width ``hidden`` (4x the dim in VideoMAE, 48/11x for ViT-g)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    Args:
        dim: token width.
        heads: attention heads.
        mlp_hidden: MLP hidden width.
        qkv_bias: learn q and v biases (VideoMAE: True).
        drop_path: stochastic depth rate of this block.
        init_values: layer scale init (``gamma_1``, ``gamma_2``); None or 0 turns it off.
        norm_eps: LayerNorm epsilon (VideoMAE 1e-6; transformers' configs carry their own).
    """

    def __init__(self, dim: int, heads: int, mlp_hidden: int, qkv_bias: bool = True, drop_path: float = 0.0,
                 init_values: float | None = None, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden)
        if init_values:
            self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values)))
            self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values)))
        else:
            self.gamma_1 = self.gamma_2 = None

    #: Under activation checkpointing (``encoder.run_blocks``), > 0 recomputes the block in pieces
    #: during the backward pass (:meth:`forward_pieces`); set by :func:`set_recompute_chunks`.
    recompute_chunks: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim]`` -> ``[B, N, dim]`` (in pieces with ``recompute_chunks`` while autograd records).

        The switch is here, not in the caller, so that calling the module keeps its hooks (FSDP2
        gathers a block's sharded weights in a forward pre-hook).
        """
        if self.recompute_chunks and torch.is_grad_enabled():
            return self.forward_pieces(x)
        x = x + self.drop_path(self._attn_branch(x))
        return x + self.drop_path(self._mlp_branch(x))

    @staticmethod
    def _scaled(y: torch.Tensor, gamma: nn.Parameter | None) -> torch.Tensor:
        """A branch's output times its layer scale, when there is one."""
        return y if gamma is None else gamma * y

    def _attn_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.attn(self.norm1(x)), self.gamma_1)

    def _mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self._scaled(self.mlp(self.norm2(x)), self.gamma_2)

    def _attn_heads(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return self.attn.heads_out(self.norm1(x), weight, bias)

    def forward_pieces(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the attention in head groups and the MLP in token chunks, each
        piece checkpointed on its own (``recompute_chunks`` token chunks, and as many head groups
        but no more than there are heads): ``[B, N, dim]`` -> ``[B, N, dim]``.

        Run inside the block's own checkpoint (``encoder.run_blocks``; without it each piece still
        keeps only its input), the backward pass then holds one piece's activations at a time
        instead of the whole block's: at 128 frames the MLP's
        hidden activations (4x the width, saved twice, plus their gradient) and attention's q, k, v
        with the flash kernel's backward buffers were most of what a recomputed block held next to
        the parameter gradients. Costs one more forward of the block (each piece is computed for
        the output, again when the block is recomputed, and once more for its own backward). Heads
        do not interact before the output projection, norms and the MLP act on each token alone,
        so the values are :meth:`forward`'s up to float rounding (a slice of the qkv weight is a
        smaller matmul), and the weight gradients sum over the pieces. (Attention dropout, which
        mvm's blocks do not use, would draw its masks group by group, not as :meth:`forward` does.)
        """
        b, n, d = x.shape
        heads = self.attn.heads
        per = -(-heads // max(1, min(self.recompute_chunks, heads)))  # heads per group
        outs = [checkpoint(self._attn_heads, x, w, bias, use_reentrant=False) for w, bias in self.attn.head_groups(per)]
        y = self.attn.proj(torch.cat(outs, 1).transpose(1, 2).reshape(b, n, d))
        x = x + self.drop_path(self._scaled(y, self.gamma_1))
        step = -(-n // max(1, self.recompute_chunks))
        # split(), not slicing: one backward node gathers the chunks' gradients (slicing would give
        # each chunk a full-size, mostly zero gradient of x, summed one by one).
        parts = [checkpoint(self._mlp_branch, c, use_reentrant=False) for c in x.split(step, 1)]
        return x + self.drop_path(torch.cat(parts, 1))


def set_recompute_chunks(model: nn.Module, chunks: int) -> None:
    """Set :attr:`Block.recompute_chunks` on every block of ``model`` (config ``model.recompute_chunks``)."""
    for m in model.modules():
        if isinstance(m, Block):
            m.recompute_chunks = int(chunks)


def init_weights(module: nn.Module) -> None:
    """VideoMAE's initialisation: xavier-uniform linears with zero bias, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

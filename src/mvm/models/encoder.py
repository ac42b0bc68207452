"""The video ViT encoder: tubelet embedding, fixed positions, blocks over the visible tokens only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mvm.grid import TokenGrid
from mvm.models.layers import Block, init_weights
from mvm.models.patch import gather_tubelets
from mvm.models.pos_embed import interpolate_pos_embed, sinusoid_rows, sinusoid_table


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """Apply ``blocks`` in turn; with ``checkpointing`` (and autograd on), keep only each block's input
    and recompute its activations in the backward pass (``use_reentrant=False``, RNG state restored,
    so dropout and stochastic depth draw the same masks twice). Blocks with ``recompute_chunks``
    are recomputed in pieces (:meth:`~mvm.models.layers.Block.forward_pieces`)."""
    if not (checkpointing and torch.is_grad_enabled()):
        for blk in blocks:
            x = blk(x)
        return x
    for blk in blocks:
        x = checkpoint(blk, x, use_reentrant=False)
    return x


class VideoEncoder(nn.Module):
    """Plain ViT with joint space-time attention (VideoMAE's encoder).

    Parameter names follow VideoMAE (``patch_embed.proj``, ``blocks.i.*``, ``norm``).

    Args:
        dim: token width.
        depth: number of blocks.
        heads: attention heads.
        tubelet: frames per token.
        patch: pixels per token side.
        in_chans: input channels.
        mlp_ratio: MLP hidden width as a multiple of ``dim`` (ignored when ``mlp_hidden`` is given).
        drop_path: stochastic depth of the last block (linearly increasing from 0, as VideoMAE).
        norm_eps: LayerNorm epsilon of the blocks and the final norm.
        final_norm: end with a LayerNorm (pretraining); off for mean-pooled fine-tuning.
        qkv_bias: learn q and v biases.
        mlp_hidden: exact MLP hidden width (checkpoints carry it; avoids float rounding of ratios).
        init_values: layer scale init, None for none.
        checkpointing: activation checkpointing per block (see :func:`run_blocks`); an attribute,
            so it can be switched on a built model.
    """

    def __init__(self, dim: int, depth: int, heads: int, tubelet: int, patch: int, in_chans: int = 3,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, norm_eps: float = 1e-6, final_norm: bool = True,
                 qkv_bias: bool = True, mlp_hidden: int | None = None, init_values: float | None = None,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        self.dim, self.depth, self.heads = dim, depth, heads
        self.tubelet, self.patch, self.in_chans = tubelet, patch, in_chans
        self.mlp_hidden = int(mlp_hidden if mlp_hidden is not None else dim * mlp_ratio)
        self.qkv_bias, self.init_values, self.norm_eps = qkv_bias, init_values, norm_eps
        self.drop_path = drop_path
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch),
                                          stride=(tubelet, patch, patch))
        # Linear stochastic-depth schedule (plain Python so meta-device builds work).
        rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, heads, self.mlp_hidden, qkv_bias=qkv_bias, drop_path=r, init_values=init_values,
                  norm_eps=norm_eps) for r in rates)
        self.norm = nn.LayerNorm(dim, eps=norm_eps) if final_norm else nn.Identity()
        # A learned table (from a checkpoint) replaces the fixed sinusoid; see use_learned_pos_embed.
        self.register_parameter("pos_embed", None)
        self.pos_grid: tuple[int, int, int] | None = None
        init_weights(self)

    @property
    def final_norm(self) -> bool:
        return isinstance(self.norm, nn.LayerNorm)

    def grid_for(self, video: torch.Tensor) -> TokenGrid:
        """Token grid of a ``[B, C, T, H, W]`` clip."""
        _, _, t, h, w = video.shape
        return TokenGrid.from_clip(t, (h, w), self.tubelet, self.patch)

    def use_learned_pos_embed(self, table: torch.Tensor, grid: tuple[int, int, int]) -> None:
        """Switch to a learned position table ``[1, N, dim]`` laid out on ``grid`` (t, h, w).

        Clips with another grid get the table resampled trilinearly (:func:`interpolate_pos_embed`).
        """
        table = table.reshape(1, -1, self.dim)
        if table.shape[1] != grid[0] * grid[1] * grid[2]:
            raise ValueError(f"position table of {table.shape[1]} rows does not fit grid {grid}")
        self.pos_embed = nn.Parameter(table.detach().clone())
        self.pos_grid = tuple(grid)

    def positions(self, grid: TokenGrid, like: torch.Tensor) -> torch.Tensor:
        """``[1, N, dim]`` position table for ``grid``, in the dtype and device of ``like``."""
        if self.pos_embed is not None:
            return interpolate_pos_embed(self.pos_embed, self.pos_grid, grid.shape).to(like.dtype)
        return sinusoid_table(grid.num_tokens, self.dim, like.device, like.dtype)[None]

    def embed(self, video: torch.Tensor, visible_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Tubelet embedding plus positions, before the blocks.

        With ``visible_idx`` only those tubelets are read and embedded: their pixels are gathered
        (``[B, Nv, C*u*p*p]``) and multiplied by the ``Conv3d`` weight as one matmul, which is the
        convolution at those tokens (same numbers up to float rounding), so neither the forward
        nor the weight gradient touches the masked 90% of the clip.

        Returns:
            ``[B, Nv, dim]`` (or ``[B, N, dim]`` without ``visible_idx``).
        """
        grid = self.grid_for(video)
        proj = self.patch_embed.proj
        if visible_idx is None:
            x = proj(video).flatten(2).transpose(1, 2)  # [B, N, dim]
            return x + self.positions(grid, x)
        patches = gather_tubelets(video, self.tubelet, self.patch, visible_idx)  # [B, Nv, C*u*p*p]
        x = F.linear(patches, proj.weight.flatten(1), proj.bias)  # [B, Nv, dim]
        if self.pos_embed is None:  # the fixed sinusoid: only the visible rows, no [N, dim] table
            return x + sinusoid_rows(visible_idx, self.dim, x.dtype)
        table = self.positions(grid, x)[0]  # [N, dim]
        return x + F.embedding(visible_idx, table)

    def forward(self, video: torch.Tensor, visible_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a clip.

        Args:
            video: ``[B, C, T, H, W]`` normalised clip.
            visible_idx: ``[B, Nv]`` long, the tokens the encoder sees; None: all ``N`` tokens.

        Returns:
            ``[B, Nv, dim]`` (or ``[B, N, dim]``), tokens in the order of ``visible_idx``.
        """
        x = self.embed(video, visible_idx)
        return self.norm(run_blocks(self.blocks, x, self.checkpointing))

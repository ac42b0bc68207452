"""The video ViT encoder: tubelet embedding, fixed positions, blocks over the visible tokens only."""

from __future__ import annotations

import torch
from torch import nn

from mvm.grid import TokenGrid
from mvm.models.layers import Block, init_weights
from mvm.models.pos_embed import get_sinusoid_encoding_table, interpolate_pos_embed


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
    """

    def __init__(self, dim: int, depth: int, heads: int, tubelet: int, patch: int, in_chans: int = 3,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0, norm_eps: float = 1e-6, final_norm: bool = True,
                 qkv_bias: bool = True, mlp_hidden: int | None = None, init_values: float | None = None) -> None:
        super().__init__()
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
        table = get_sinusoid_encoding_table(grid.num_tokens, self.dim)
        return table.to(device=like.device, dtype=like.dtype)

    def forward(self, video: torch.Tensor, visible_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Encode a clip.

        Args:
            video: ``[B, C, T, H, W]`` normalised clip.
            visible_idx: ``[B, Nv]`` long, the tokens the encoder sees; None: all ``N`` tokens.

        Returns:
            ``[B, Nv, dim]`` (or ``[B, N, dim]``), tokens in the order of ``visible_idx``.
        """
        grid = self.grid_for(video)
        x = self.patch_embed.proj(video).flatten(2).transpose(1, 2)  # [B, N, dim]
        x = x + self.positions(grid, x)
        if visible_idx is not None:
            x = torch.gather(x, 1, visible_idx[..., None].expand(-1, -1, x.shape[-1]))  # [B, Nv, dim]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

"""The masked video autoencoder, read top to bottom like facebookresearch/mae ``models_mae.py``.

    clip --encoder(visible tokens only)--> [B, Nv, dim]
         --encoder_to_decoder--> [B, Nv, dec]  + positions of the visible tokens
         ++ mask_token + positions of the tokens to decode   -> [B, Nv + Nd, dec]
         --decoder blocks, norm, head--> predictions for the last Nd entries [B, Nd, out_dim]

An optional motion head (``motion_dim > 0``, ours) reads the encoder's visible tokens and
predicts each one's motion, the target the codec's motion vectors give for free (``mvm.targets``).

With ``decode_idx`` = every masked token this is exactly VideoMAE's (and transformers')
``VideoMAEForPreTraining``; a smaller ``decode_idx`` is VideoMAE V2's decoder masking. Parameter
names match the original VideoMAE pretraining checkpoints (``encoder.*``, ``encoder_to_decoder``,
``mask_token``, ``decoder.blocks.*``, ``decoder.norm``, ``decoder.head``).
"""

from __future__ import annotations

import torch
from torch import nn

from mvm.models.encoder import VideoEncoder, run_blocks
from mvm.models.layers import Block, init_weights
from mvm.models.pos_embed import sinusoid_rows


class MaeDecoder(nn.Module):
    """Narrow transformer that turns decoder tokens into per-token pixel predictions."""

    def __init__(self, dim: int, depth: int, heads: int, out_dim: int, mlp_hidden: int, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, head_norm_eps: float = 1e-6, init_values: float | None = None,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.checkpointing = checkpointing  # per-block activation checkpointing (encoder.run_blocks)
        self.dim, self.depth, self.heads, self.mlp_hidden = dim, depth, heads, mlp_hidden
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_hidden, qkv_bias=qkv_bias, init_values=init_values, norm_eps=norm_eps)
            for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=head_norm_eps)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, num_out: int) -> torch.Tensor:
        """``[B, M, dim]`` -> predictions for the last ``num_out`` tokens ``[B, num_out, out_dim]``."""
        x = run_blocks(self.blocks, x, self.checkpointing)
        return self.head(self.norm(x[:, x.shape[1] - num_out:]))


class MaskedVideoAutoencoder(nn.Module):
    """VideoMAE-style masked autoencoder.

    Args:
        encoder: the :class:`VideoEncoder` (its final norm feeds the decoder).
        decoder_dim: decoder width.
        decoder_depth: decoder blocks (VideoMAE: 4).
        decoder_heads: decoder attention heads.
        out_dim: values predicted per token (default ``tubelet*patch*patch*in_chans``).
        decoder_mlp_hidden: decoder MLP width (default 4x ``decoder_dim``).
        norm_eps: LayerNorm epsilon of the decoder blocks (default: the encoder's).
        head_norm_eps: epsilon of the decoder's final norm (VideoMAE 1e-6; transformers 1e-5).
        motion_dim: values of the motion head per visible token (2: dx, dy); 0 (default): no head.
        checkpointing: activation checkpointing per block in encoder and decoder (the
            ``checkpointing`` property switches it on a built model).
    """

    def __init__(self, encoder: VideoEncoder, decoder_dim: int, decoder_depth: int = 4, decoder_heads: int = 6,
                 out_dim: int | None = None, decoder_mlp_hidden: int | None = None, norm_eps: float | None = None,
                 head_norm_eps: float = 1e-6, motion_dim: int = 0, checkpointing: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        if out_dim is None:
            out_dim = encoder.tubelet * encoder.patch * encoder.patch * encoder.in_chans
        self.out_dim = out_dim
        self.encoder_to_decoder = nn.Linear(encoder.dim, decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = MaeDecoder(decoder_dim, decoder_depth, decoder_heads, out_dim,
                                  decoder_mlp_hidden or 4 * decoder_dim, qkv_bias=encoder.qkv_bias,
                                  norm_eps=encoder.norm_eps if norm_eps is None else norm_eps,
                                  head_norm_eps=head_norm_eps, init_values=encoder.init_values)
        self.motion_dim = motion_dim
        self.motion_head = nn.Linear(encoder.dim, motion_dim) if motion_dim else None
        init_weights(self.encoder_to_decoder)
        init_weights(self.decoder)
        if self.motion_head is not None:
            init_weights(self.motion_head)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.checkpointing = checkpointing

    @property
    def checkpointing(self) -> bool:
        """Activation checkpointing in the encoder and decoder blocks (recompute in backward)."""
        return self.encoder.checkpointing and self.decoder.checkpointing

    @checkpointing.setter
    def checkpointing(self, on: bool) -> None:
        self.encoder.checkpointing = self.decoder.checkpointing = bool(on)

    def forward(self, video: torch.Tensor, visible_idx: torch.Tensor, decode_idx: torch.Tensor,
                with_motion: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict the ``decode_idx`` tokens of ``video`` from its ``visible_idx`` tokens.

        Args:
            video: ``[B, C, T, H, W]`` normalised clip.
            visible_idx: ``[B, Nv]`` long, tokens the encoder sees.
            decode_idx: ``[B, Nd]`` long, tokens to reconstruct (normally masked ones).
            with_motion: also return the motion head's predictions (needs ``motion_dim > 0``).
                A flag rather than a second method so DDP/FSDP wrappers see one ``forward``.

        Returns:
            ``[B, Nd, out_dim]`` predictions, row ``k`` for token ``decode_idx[:, k]``; with
            ``with_motion``, also ``[B, Nv, motion_dim]``, row ``k`` for token ``visible_idx[:, k]``.
        """
        if with_motion and self.motion_head is None:
            raise ValueError("with_motion=True needs a model built with motion_dim > 0")
        # 1. encode the visible tokens: [B, Nv, dim] -> [B, Nv, dec]
        latent = self.encoder(video, visible_idx)
        x = self.encoder_to_decoder(latent)
        # 2. decoder positions (the fixed sinusoid), computed for the visible and the decoded
        #    tokens only: no [N, dec] table for a long clip's N tokens
        pos_vis = sinusoid_rows(visible_idx, x.shape[-1], x.dtype)  # [B, Nv, dec]
        pos_dec = sinusoid_rows(decode_idx, x.shape[-1], x.dtype)  # [B, Nd, dec]
        # 3. visible tokens first, then one mask token per token to decode: [B, Nv + Nd, dec]
        x = torch.cat([x + pos_vis, self.mask_token.to(x.dtype) + pos_dec], dim=1)
        # 4. decode; keep the predictions of the mask tokens: [B, Nd, out_dim]
        pred = self.decoder(x, decode_idx.shape[1])
        if not with_motion:
            return pred
        # 5. motion of every visible token, read straight off the encoder: [B, Nv, motion_dim]
        return pred, self.motion_head(latent)

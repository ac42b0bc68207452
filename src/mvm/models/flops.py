"""Analytic FLOP count of a masked-autoencoder pretraining step (for MFU figures).

Counts the matmuls only (2 FLOPs per multiply-add), the convention of PaLM / nanoGPT MFU:

    block(L, d, h)  = 2 L (4 d^2 + 2 d h)  +  4 L^2 d        # qkv + proj + mlp, then QK^T and AV
    forward         = 2 Nv (C u p^2) d                       # tubelet embedding of the visible tokens
                    + depth_enc * block(Nv, d, h)            # encoder on the visible tokens
                    + 2 Nv d d_dec                           # encoder_to_decoder
                    + depth_dec * block(Nv + Nd, d_dec, h_dec)   # decoder on visible + decoded tokens
                    + 2 Nd d_dec out                         # head on the decoded tokens
    step            = 3 * batch * forward                    # backward = 2 x forward

LayerNorm, softmax, GELU, the loss and the optimiser are not counted (they are not matmuls).
"""

from __future__ import annotations

from mvm.models.mae import MaskedVideoAutoencoder


def block_flops(tokens: int, dim: int, hidden: int) -> int:
    """Matmul FLOPs of one transformer block's forward over ``tokens`` tokens of width ``dim``."""
    return 2 * tokens * (4 * dim * dim + 2 * dim * hidden) + 4 * tokens * tokens * dim


def mae_step_flops(model: MaskedVideoAutoencoder, batch: int, visible: int, decoded: int) -> int:
    """Matmul FLOPs of one forward + backward pretraining step (formula in the module docstring).

    Args:
        model: the autoencoder (sizes are read from it).
        batch: clips per step.
        visible: encoder tokens per clip (``Nv``).
        decoded: decoded tokens per clip (``Nd``).
    """
    enc, dec = model.encoder, model.decoder
    embed = 2 * visible * enc.in_chans * enc.tubelet * enc.patch * enc.patch * enc.dim
    fwd = (embed + enc.depth * block_flops(visible, enc.dim, enc.mlp_hidden)
           + 2 * visible * enc.dim * dec.dim
           + dec.depth * block_flops(visible + decoded, dec.dim, dec.mlp_hidden)
           + 2 * decoded * dec.dim * model.out_dim)
    return 3 * batch * fwd

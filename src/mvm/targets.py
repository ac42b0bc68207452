"""Reconstruction targets and the masked loss: pure functions of the clip.

Targets are per token ``[B, N, tubelet*patch*patch*C]`` in (t, h, w) token order with values
ordered (tubelet, patch_y, patch_x, channel), as :func:`mvm.models.patch.patchify` lays them out
and as VideoMAE and transformers' ``VideoMAEForPreTraining`` compute their labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mvm.models.patch import gather_tubelets, tubelet_view


def _channel_pixels(video: torch.Tensor, tubelet: int, patch: int, mean: torch.Tensor | list[float],
                    std: torch.Tensor | list[float], idx: torch.Tensor | None) -> torch.Tensor:
    """Pixels in [0, 1] of the tokens ``idx`` (all with None), channel-major: ``[B, K, C, u*p*p]``.

    A new tensor (the caller may overwrite it). Channel-major because the gather then copies runs
    of ``patch`` values (7.6 vs 10.9 ms on CPU for the 2,816 decoded tokens of two 16-frame
    clips) and the per-channel statistics of :func:`norm_pix_target` reduce over contiguous
    memory; the target layout (channel fastest) is one transposing copy at the end.
    """
    video = video.float()
    c = video.shape[1]
    if idx is None:
        x = tubelet_view(video, tubelet, patch, layout="conv")  # [B, gt, gh, gw, C, u, p, p] view
        x = x.reshape(x.shape[0], -1, c, tubelet * patch * patch)
    else:
        x = gather_tubelets(video, tubelet, patch, idx, layout="conv").unflatten(-1, (c, -1))
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(c, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(c, 1)
    if x.data_ptr() == video.data_ptr():  # a view after all (one-pixel tokens): not ours to overwrite
        return x * std + mean
    return x.mul_(std).add_(mean)  # in place: x is the reshape's or the gather's own copy


def _target_layout(x: torch.Tensor) -> torch.Tensor:
    """``[B, K, C, u*p*p]`` -> ``[B, K, u*p*p*C]`` (channel fastest, the order of :func:`patchify`)."""
    return x.transpose(-1, -2).reshape(x.shape[0], x.shape[1], -1)


@torch.no_grad()
def pixel_target(video: torch.Tensor, tubelet: int, patch: int, mean: torch.Tensor | list[float],
                 std: torch.Tensor | list[float], idx: torch.Tensor | None = None) -> torch.Tensor:
    """Raw pixels of the tokens: ``[B, C, T, H, W]`` (normalised) -> ``[B, N, tubelet*patch*patch*C]``
    in [0, 1]; with ``idx`` (``[B, K]`` long) only those tokens, ``[B, K, ...]``, reading only their
    pixels (the cost then follows K, not the clip: long clips decode 15% of their tokens)."""
    return _target_layout(_channel_pixels(video, tubelet, patch, mean, std, idx))


@torch.no_grad()
def norm_pix_target(video: torch.Tensor, tubelet: int, patch: int, mean: torch.Tensor | list[float],
                    std: torch.Tensor | list[float], eps: float = 1e-6,
                    idx: torch.Tensor | None = None) -> torch.Tensor:
    """VideoMAE's target: pixels of each token normalised per token and per channel.

    ``(x - x.mean) / (x.var(unbiased=True).sqrt() + eps)`` over the ``tubelet*patch*patch`` values of
    one channel of one token, after undoing the ImageNet normalisation (VideoMAE's
    ``engine_for_pretraining.py`` and transformers' ``norm_pix_loss``).

    Args:
        video: ``[B, C, T, H, W]`` normalised clip.
        tubelet, patch: token geometry.
        mean, std: the per-channel normalisation the clip went through.
        eps: added to the standard deviation.
        idx: ``[B, K]`` long: only those tokens (e.g. the decoded ones), computed from their pixels alone.

    Returns:
        ``[B, N, tubelet*patch*patch*C]`` float32 (``[B, K, ...]`` with ``idx``).
    """
    x = _channel_pixels(video, tubelet, patch, mean, std, idx)  # [B, K, C, u*p*p], ours to overwrite
    # Two passes, in place (no second [B, K, C, u*p*p] tensor: 66 MB for the 11,264 decoded tokens
    # of a 128-frame clip): centre, then the standard deviation as the norm of the centred values.
    # torch.var_mean's one-pass (Welford) kernel gives the same numbers to a float32 rounding or
    # two and takes 10x longer on CPU (16 vs 1.6 ms for two 16-frame clips' decoded tokens).
    x.sub_(x.mean(-1, keepdim=True))
    std = torch.linalg.vector_norm(x, dim=-1, keepdim=True).div_(math.sqrt(x.shape[-1] - 1))  # unbiased
    x.div_(std.add_(eps))
    return _target_layout(x)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``torch.mean((pred.float() - target.float()) ** 2)``, the same numbers, less memory.

    One fused op (``F.mse_loss``): the written-out form keeps the difference for the backward pass
    and builds three more ``pred``-sized tensors there (``2 * diff``, the mean's expanded gradient,
    their product); this one keeps nothing but its inputs and builds only the gradient. Decoding
    every masked token of a 128-frame clip (11,264 x 1,536 values, 66 MB each in float32) that is
    about 260 MB less at the peak. Value and gradient are bit for bit those of the written-out form.

    Args:
        pred: ``[..., D]`` predictions (any float dtype; compared in float32).
        target: same shape.

    Returns:
        scalar float32 mean squared error.
    """
    # clone(): on CPU, F.mse_loss returns its 0-d result in the storage of the [..., D] elementwise
    # buffer (allocated full size, then resized), which would stay alive with the loss (through
    # backward and wherever the loop keeps ``loss.detach()``). The clone owns 4 bytes; the buffer
    # goes now (the backward saves pred and target, not the output).
    return F.mse_loss(pred.float(), target.float()).clone()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, decode_idx: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the decoded tokens only.

    Args:
        pred: ``[B, K, D]``, row ``k`` predicting token ``decode_idx[:, k]``.
        target: ``[B, N, D]`` targets of every token.
        decode_idx: ``[B, K]`` long.

    Returns:
        scalar: the mean over ``B*K*D`` squared errors (transformers' ``MSELoss`` on the masked labels).
    """
    if pred.shape[:2] != decode_idx.shape or pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and decode_idx "
                         f"{tuple(decode_idx.shape)} do not agree")
    labels = torch.gather(target, 1, decode_idx[..., None].expand(-1, -1, target.shape[-1]))  # [B, K, D]
    return mse(pred, labels)


def motion_target(motion: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Per-token motion as a target: ``[B, t, h, w, 2]`` -> ``[B, N, 2]`` in (t, h, w) token order.

    ``motion`` is the token-grid field the dataset delivers (``mvm.motion.field.to_token_grid``:
    pixels per frame at the clip's resolution, dx right, dy down), here divided by ``scale`` so the
    target is of order one. It comes from the codec's motion vectors, which the decoder reads for
    free, so the target costs no labels and no optical-flow network.
    """
    if motion.dim() != 5 or motion.shape[-1] != 2:
        raise ValueError(f"motion must be [B, t, h, w, 2], got {tuple(motion.shape)}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return motion.float().flatten(1, 3) / scale


def token_loss(logits: torch.Tensor, digits: torch.Tensor, decode_idx: torch.Tensor,
               levels: list[int] | tuple[int, ...]) -> torch.Tensor:
    """LVMAE token target: cross-entropy factorised over the quantiser's levels, decoded tokens only.

    A code of an FSQ codebook with levels ``[L_1, ..., L_m]`` is ``m`` digits, digit ``i`` in
    ``[0, L_i)``. The head predicts ``sum(levels)`` logits per token; each consecutive group of
    ``L_i`` logits is one small softmax over digit ``i`` (ours: the paper leaves the loss open; a
    single softmax would need ``prod(levels)`` outputs, 1000 for ``[8, 5, 5, 5]``, 64000 for
    MAGVIT-2-sized codebooks).

    Args:
        logits: ``[B, K, sum(levels)]``, row ``k`` for token ``decode_idx[:, k]``.
        digits: ``[B, N, m]`` long, the tokenizer's per-level digits of every token.
        decode_idx: ``[B, K]`` long, the decoded tokens (only these count).
        levels: the quantiser's levels.

    Returns:
        scalar: the mean over the ``B*K*m`` per-level cross-entropies.
    """
    levels = [int(v) for v in levels]
    if logits.shape[:2] != decode_idx.shape or logits.shape[-1] != sum(levels):
        raise ValueError(f"logits {tuple(logits.shape)} must be [B, K, sum(levels)={sum(levels)}] for "
                         f"decode_idx {tuple(decode_idx.shape)}")
    if digits.dim() != 3 or digits.shape[-1] != len(levels):
        raise ValueError(f"digits must be [B, N, {len(levels)}], got {tuple(digits.shape)}")
    labels = torch.gather(digits, 1, decode_idx[..., None].expand(-1, -1, len(levels)))  # [B, K, m]
    losses = [
        torch.nn.functional.cross_entropy(part.float().flatten(0, 1), labels[..., i].flatten())
        for i, part in enumerate(logits.split(levels, dim=-1))
    ]
    return torch.stack(losses).mean()

"""Cutting clips into tubelet tokens and putting them back.

Token order is (t, h, w), the order of the tubelet Conv3d output flattened; inside a token the
values are ordered (tubelet, patch_y, patch_x, channel), the target order of transformers'
``VideoMAEForPreTraining`` and of the original VideoMAE (``b c (t p0) (h p1) (w p2) -> b (t h w)
(p0 p1 p2 c)``), so targets and predictions move between the three unchanged.
"""

from __future__ import annotations

import torch

from mvm.grid import TokenGrid


def patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """``[B, C, T, H, W]`` -> ``[B, N, tubelet*patch*patch*C]`` with ``N = T/tubelet * H/patch * W/patch``.

    Raises:
        ValueError: when the clip does not divide into whole tubelets.
    """
    if video.ndim != 5:
        raise ValueError(f"expected a [B, C, T, H, W] clip, got shape {tuple(video.shape)}")
    b, c, t, h, w = video.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(f"clip {t}x{h}x{w} does not divide into {tubelet}x{patch}x{patch} tubelets")
    gt, gh, gw = t // tubelet, h // patch, w // patch
    x = video.reshape(b, c, gt, tubelet, gh, patch, gw, patch)
    # (b, c, gt, u, gh, py, gw, px) -> (b, gt, gh, gw, u, py, px, c)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, gt * gh * gw, tubelet * patch * patch * c)


def unpatchify(tokens: torch.Tensor, grid: TokenGrid, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, N, tubelet*patch*patch*C]`` -> ``[B, C, T, H, W]``.

    Raises:
        ValueError: when ``tokens`` does not fit ``grid``.
    """
    b, n, d = tokens.shape
    u, p = grid.tubelet, grid.patch
    if n != grid.num_tokens or d != u * p * p * channels:
        raise ValueError(f"tokens {tuple(tokens.shape)} do not fit grid {grid.shape} "
                         f"with {u}x{p}x{p}x{channels} values per token")
    x = tokens.reshape(b, grid.t, grid.h, grid.w, u, p, p, channels)
    # (b, gt, gh, gw, u, py, px, c) -> (b, c, gt, u, gh, py, gw, px)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, channels, grid.t * u, grid.h * p, grid.w * p)


def tubelet_view(video: torch.Tensor, tubelet: int, patch: int, layout: str = "conv") -> torch.Tensor:
    """A view (no copy) of ``[B, C, T, H, W]`` as ``[B, gt, gh, gw, *values]``.

    ``layout="conv"``: values ordered ``(C, tubelet, patch_y, patch_x)``, the order of the
    tubelet ``Conv3d`` weight; ``layout="target"``: ``(tubelet, patch_y, patch_x, C)``, the order
    of :func:`patchify`.
    """
    if video.ndim != 5:
        raise ValueError(f"expected a [B, C, T, H, W] clip, got shape {tuple(video.shape)}")
    _, _, t, h, w = video.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(f"clip {t}x{h}x{w} does not divide into {tubelet}x{patch}x{patch} tubelets")
    x = video.unflatten(4, (w // patch, patch)).unflatten(3, (h // patch, patch)).unflatten(2, (t // tubelet, tubelet))
    # (b, c, gt, u, gh, py, gw, px)
    if layout == "conv":
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7)
    if layout == "target":
        return x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    raise ValueError(f"layout must be 'conv' or 'target', got {layout!r}")


def gather_tubelets(video: torch.Tensor, tubelet: int, patch: int, idx: torch.Tensor,
                    layout: str = "conv") -> torch.Tensor:
    """The pixels of the tokens ``idx`` only: ``[B, C, T, H, W]`` -> ``[B, K, C*tubelet*patch*patch]``.

    Reads only the ``K`` tubelets asked for (no copy of the whole clip), so the cost follows ``K``,
    not the clip length. ``layout="target"`` gives rows ``k`` equal to ``patchify(video)[:, idx[:, k]]``;
    ``layout="conv"`` orders each row like the flattened ``Conv3d`` weight, so
    ``gather_tubelets(...) @ conv.weight.flatten(1).T + conv.bias`` is the convolution at those tokens.

    Args:
        video: ``[B, C, T, H, W]``.
        tubelet, patch: token geometry.
        idx: ``[B, K]`` long token indices in (t, h, w) order.
        layout: ``"conv"`` or ``"target"`` (see :func:`tubelet_view`).
    """
    x = tubelet_view(video, tubelet, patch, layout)
    gh, gw = x.shape[2], x.shape[3]
    if idx.ndim != 2 or idx.shape[0] != video.shape[0]:
        raise ValueError(f"idx must be [B, K] with B={video.shape[0]}, got {tuple(idx.shape)}")
    plane = gh * gw
    t, rest = idx // plane, idx % plane
    rows = torch.arange(idx.shape[0], device=idx.device)[:, None]
    return x[rows, t, rest // gw, rest % gw].flatten(2)  # [B, K, values]

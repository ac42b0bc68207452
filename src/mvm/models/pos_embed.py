"""Position tables: VideoMAE's fixed 1-D sinusoid and interpolation of a table to another grid.

VideoMAE (and transformers' port) gives token ``i`` of the flattened (t, h, w) order the row ``i``
of ``get_sinusoid_encoding_table(N, dim)``: angle ``i / 10000^(2*(j//2)/dim)``, sine on even
columns, cosine on odd ones. The table depends only on ``N``, so any clip length works; it is
computed in float64 (as the reference does with numpy) and then cast, so values agree bit for bit
up to the final float32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CACHE: dict[tuple[int, int], torch.Tensor] = {}
# Tables already moved and cast, per (n, dim, device, dtype): a forward pass then costs a dict
# lookup instead of a host-to-device copy and a cast. Bounded so odd clip lengths cannot pile up.
_PLACED: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}
_PLACED_MAX = 64


def _sinusoid(pos: torch.Tensor, d_hid: int) -> torch.Tensor:
    """Rows ``pos`` (``[K]`` float64 positions) of the table: ``[K, d_hid]`` float32.

    Every element is computed on its own (angle, then sin or cos, in float64, then the cast), so
    a row does not depend on which other rows are computed with it.
    """
    j = torch.arange(d_hid, dtype=torch.float64, device=pos.device)
    # (a Python base: a tensor made from a number on a GPU is a blocking copy, once per forward)
    freq = torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d_hid)
    angle = pos[:, None] / freq
    table = torch.empty_like(angle)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float()


def get_sinusoid_encoding_table(n_position: int, d_hid: int) -> torch.Tensor:
    """The fixed table ``[1, n_position, d_hid]`` float32 (VideoMAE / transformers semantics)."""
    key = (n_position, d_hid)
    if key not in _CACHE:
        _CACHE[key] = _sinusoid(torch.arange(n_position, dtype=torch.float64), d_hid).unsqueeze(0)
    return _CACHE[key]


def sinusoid_rows(idx: torch.Tensor, d_hid: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows ``idx`` of the fixed table, ``F.embedding(idx, sinusoid_table(N, d_hid, ...))`` without the table.

    Computes only the ``idx.numel()`` rows asked for, on ``idx``'s device: a masked autoencoder
    needs the positions of its visible and decoded tokens, and at 128 frames the whole table
    (12,544 tokens) would be 19 MB (ViT-S, float32) held for the 10-25% of rows it reads, plus
    three float64 temporaries of the same size while it is built.

    Args:
        idx: ``[...]`` long token indices.
        d_hid: table width.
        dtype: result dtype (the float32 values cast, as :func:`sinusoid_table` does).

    Returns:
        ``[..., d_hid]`` in ``dtype``.
    """
    rows = _sinusoid(idx.reshape(-1).to(torch.float64), d_hid)
    return rows.to(dtype).reshape(*idx.shape, d_hid)


def sinusoid_table(n_position: int, d_hid: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """:func:`get_sinusoid_encoding_table` as ``[n_position, d_hid]`` on ``device`` in ``dtype``, cached.

    The values are the float32 table cast to ``dtype`` (what ``table.to(dtype)`` gives), so the
    cache changes no number. The returned tensor is shared: never modify it in place.
    """
    key = (n_position, d_hid, torch.device(device), dtype)
    table = _PLACED.get(key)
    if table is None:
        if len(_PLACED) >= _PLACED_MAX:
            _PLACED.clear()
        table = get_sinusoid_encoding_table(n_position, d_hid)[0].to(device=key[2], dtype=dtype)
        _PLACED[key] = table
    return table


def interpolate_pos_embed(table: torch.Tensor, src: tuple[int, int, int], dst: tuple[int, int, int]) -> torch.Tensor:
    """Resample a per-token table from grid ``src`` (t, h, w) to grid ``dst``, trilinearly.

    Args:
        table: ``[1, N, D]`` or ``[N, D]`` with ``N = t*h*w`` of ``src`` in (t, h, w) order.
        src: source grid shape.
        dst: target grid shape.

    Returns:
        ``[1, N', D]`` with ``N' = prod(dst)``; the input itself (as ``[1, N, D]``) when the grids agree.
    """
    if table.ndim == 2:
        table = table.unsqueeze(0)
    n, d = table.shape[1], table.shape[2]
    if n != src[0] * src[1] * src[2]:
        raise ValueError(f"position table has {n} rows, grid {src} has {src[0] * src[1] * src[2]} tokens")
    if tuple(src) == tuple(dst):
        return table
    grid = table.reshape(1, *src, d).permute(0, 4, 1, 2, 3)  # [1, D, t, h, w]
    out = F.interpolate(grid.float(), size=tuple(dst), mode="trilinear", align_corners=False)
    return out.permute(0, 2, 3, 4, 1).reshape(1, -1, d).to(table.dtype)

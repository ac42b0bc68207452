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


def get_sinusoid_encoding_table(n_position: int, d_hid: int) -> torch.Tensor:
    """The fixed table ``[1, n_position, d_hid]`` float32 (VideoMAE / transformers semantics)."""
    key = (n_position, d_hid)
    if key not in _CACHE:
        pos = torch.arange(n_position, dtype=torch.float64)[:, None]
        j = torch.arange(d_hid, dtype=torch.float64)
        angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / d_hid)
        table = torch.empty_like(angle)
        table[:, 0::2] = torch.sin(angle[:, 0::2])
        table[:, 1::2] = torch.cos(angle[:, 1::2])
        _CACHE[key] = table.float().unsqueeze(0)
    return _CACHE[key]


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

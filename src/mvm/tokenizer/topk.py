"""Differentiable top-k for the token scorer: straight-through with a sigmoid surrogate.

Forward: the exact hard top-k (1 for the ``k`` highest scores of a row, 0 elsewhere), so the
decoder sees exactly the token budget the MAE will decode later. Backward: the gradient of
``sigmoid((z - tau) / temperature)``, where ``z`` are the row's scores standardised (so the
temperature does not depend on the scorer's scale) and ``tau`` sits midway between the k-th and
(k+1)-th standardised score. A token near the cut gets the largest gradient: the decoder's loss
tells the scorer whether having it (or not) would help.

Why this and not the alternatives (docs/lvmae.md): perturbed-maximum top-k averages many noisy
top-k draws per step (several samples for a usable gradient, and a soft selection in the forward
pass that never matches the hard budget); Gumbel top-k adds noise to the selection, which
regularises but makes the decoder train on selections it will not get when frozen. The straight-
through form costs one sort, keeps exactly ``k`` in every forward, and its bias is the usual ST one.
"""

from __future__ import annotations

import torch


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """``[B, N]`` scores -> ``[B, N]`` float, exactly ``k`` ones per row at the highest scores."""
    if not 0 <= k <= scores.shape[1]:
        raise ValueError(f"k={k} outside [0, {scores.shape[1]}]")
    idx = scores.topk(k, dim=1).indices
    return torch.zeros_like(scores).scatter_(1, idx, 1.0)


def straight_through_topk(scores: torch.Tensor, k: int, temperature: float = 0.5,
                          noise: float = 0.0) -> torch.Tensor:
    """Hard top-k in the forward pass, sigmoid-surrogate gradients in the backward pass.

    Args:
        scores: ``[B, N]`` float, higher = keep.
        k: tokens kept per row (``1 <= k <= N``).
        temperature: width of the sigmoid in standard deviations of the row's scores.
        noise: scale of Gumbel noise added to the standardised scores before the cut (0: none).
            With noise the kept set is a draw (Gumbel top-k: k tokens without replacement, each
            with probability ~ ``exp(z / noise)``), so tokens the scorer ranks just below the cut
            are kept now and then and the loss can tell whether they help. Without it, the scorer
            and the decoder can settle on a selection that only reinforces itself (docs/lvmae.md).

    Returns:
        ``[B, N]`` with values exactly 0 or 1 (``k`` ones per row), differentiable w.r.t. ``scores``.
    """
    n = scores.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} outside [1, {n}]")
    scores = scores.float()
    if k == n:
        return torch.ones_like(scores) + 0.0 * scores  # nothing to choose; keep the graph for backprop
    z = (scores - scores.mean(1, keepdim=True)) / (scores.std(1, keepdim=True) + 1e-6)
    if noise > 0:  # the same surrogate, centred on the perturbed cut
        u = torch.rand_like(z).clamp_(1e-9, 1 - 1e-9)
        z = z - noise * torch.log(-torch.log(u))
    hard = topk_mask((z if noise > 0 else scores).detach(), k)
    top = z.detach().topk(k + 1, dim=1).values  # [B, k+1] descending
    tau = 0.5 * (top[:, k - 1:k] + top[:, k:k + 1])  # midway between the k-th and the (k+1)-th
    soft = torch.sigmoid((z - tau) / temperature)
    return hard + (soft - soft.detach())

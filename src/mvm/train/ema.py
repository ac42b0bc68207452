"""Exponential moving average of a model's weights (timm's ``ModelEma``, used by VideoMAE fine-tuning).

Under FSDP2 the average is kept sharded like the weights it follows: each rank holds and updates only
its own shard of every sharded weight, so a step costs no communication and no rank holds the whole
average. The whole average is gathered only where it is used (validation, checkpoints), by
:meth:`ModelEma.gather` on every rank.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

log = logging.getLogger(__name__)


def _is_sharded(value: torch.Tensor) -> bool:
    """A DTensor (FSDP2's sharded parameters); by duck type, so no torch.distributed import is needed."""
    return hasattr(value, "full_tensor") and hasattr(value, "device_mesh")


def _set_tensor(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace ``module``'s parameter or buffer ``name`` (a state-dict key) by ``tensor``, a frozen
    parameter where it was a parameter."""
    prefix, _, leaf = name.rpartition(".")
    owner = module.get_submodule(prefix)
    if leaf in owner._parameters:
        tensor = nn.Parameter(tensor, requires_grad=False)
    setattr(owner, leaf, tensor)


def _local_part(whole: torch.Tensor, like: DTensor) -> torch.Tensor:
    """This rank's part of ``whole`` [*S] laid out like the DTensor ``like`` (global shape S): a
    ``torch.chunk`` per ``Shard`` placement (how DTensor and FSDP2 split, uneven and empty shards
    included), the whole along a ``Replicate`` one. No communication: every rank holds the same
    whole tensor (the model every rank built from one seed, or the same checkpoint); a contiguous
    copy, so the whole tensor can be freed."""
    from torch.distributed.tensor import Replicate, Shard

    part = whole
    coordinate = like.device_mesh.get_coordinate()
    for mesh_dim, placement in enumerate(like.placements):
        if type(placement) is Shard:
            pieces = torch.chunk(part, like.device_mesh.size(mesh_dim), placement.dim)
            i = coordinate[mesh_dim]
            part = pieces[i] if i < len(pieces) else part.narrow(placement.dim, 0, 0)
        elif not isinstance(placement, Replicate):  # strided or partial layouts: not what FSDP2 makes here
            raise NotImplementedError(f"EMA of a DTensor placed {like.placements}: only Shard and Replicate")
    local = like.to_local()
    if part.shape != local.shape:
        raise RuntimeError(f"EMA shard {tuple(part.shape)} does not match the weight's local shard "
                           f"{tuple(local.shape)} (placements {like.placements})")
    return part.to(local.device, copy=True).contiguous()


class ModelEma:
    """A detached copy whose floating-point weights follow ``decay * ema + (1 - decay) * weights``.

    Buffers that are not floating point (counters) are copied as they are. The copy follows the
    device of the model (moved there at the first update) and is never trained; ``state_dict`` /
    ``load_state_dict`` make it resumable.

    Under FSDP2 (the model's state dict holds sharded DTensors) the first :meth:`update` shards the
    average the same way, locally; from then on each rank keeps and updates only its shards and
    :attr:`module` holds placeholders for them. :meth:`gather` (collective: every rank calls it)
    makes the whole average for :attr:`module`, :meth:`state_dict` and :meth:`weights` until the
    next update. Single process and DDP: the whole module, as always; ``gather`` does nothing.

    Args:
        model: the model to follow (an unwrapped module: pass ``model.module`` under DDP; under
            FSDP2 the plain model before ``fully_shard``, on every rank).
        decay: weight of the old average at each update (VideoMAE 0.9999).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._module = copy.deepcopy(model).eval()
        for p in self._module.parameters():
            p.requires_grad_(False)
        self.updates = 0
        #: FSDP2: state-dict key -> the average's DTensor shard, laid out like the weight's.
        self._shards: dict[str, DTensor] = {}
        #: the local tensors of ``_shards``, which the update changes in place.
        self._locals: dict[str, torch.Tensor] = {}
        #: FSDP2: the whole average on CPU made by :meth:`gather`, until the next update.
        self._gathered: nn.Module | None = None
        #: FSDP2: gathered since the last update or load (the same on every rank)
        self._fresh = False

    @property
    def sharded(self) -> bool:
        """Whether the average is kept as this rank's shards (FSDP2, from the first update)."""
        return bool(self._shards)

    @property
    def module(self) -> nn.Module:
        """The whole average as a module (eval mode, frozen). Under FSDP2 the one :meth:`gather` made
        (on CPU), which needs that call on every rank after the last update."""
        if not self._shards:
            return self._module
        if self._gathered is None:
            raise RuntimeError("the EMA is kept sharded under FSDP2: call gather() on every rank after the last "
                               "update to have it whole")
        return self._gathered

    @torch.no_grad()
    def update(self, model: nn.Module, taken: torch.Tensor | None = None) -> None:
        """Move the average towards ``model``'s current weights (call after each optimiser step).

        ``taken``: 0-dim bool on the device, False for a step the optimiser skipped, which then
        leaves the average as it is, decided on the device (no host sync); None: always taken.
        ``updates`` counts the calls. Under FSDP2 (sharded DTensor weights) every rank calls it and
        each updates its own shards: no communication."""
        values = model.state_dict()
        if not self._shards and any(_is_sharded(v) for v in values.values()):
            self._shard_like(values)
        elif not self._shards:
            device = next((v.device for v in values.values()), None)
            first = next(self._module.parameters(), None)
            if device is not None and first is not None and first.device != device:
                self._module.to(device)
        self._gathered, self._fresh = None, False  # stale from here on; dropping it frees the whole copy
        own = self._module.state_dict()
        weight = None if taken is None else (1 - self.decay) * taken.float()
        for name, value in values.items():
            # Under FSDP2 both sides are this rank's shards of one layout: a purely local update.
            target = self._locals[name] if name in self._locals else own[name]
            if _is_sharded(value):
                value = value.to_local()
            value = value.to(target.device)
            if not target.dtype.is_floating_point:
                target.copy_(value)
            elif weight is None:
                target.mul_(self.decay).add_(value.to(target.dtype), alpha=1 - self.decay)
            else:
                target.lerp_(value.to(target.dtype), weight.to(target.dtype))
        self.updates += 1

    def _shard_like(self, values: dict[str, torch.Tensor]) -> None:
        """Turn the whole average into shards laid out like ``values``' DTensors (FSDP2's sharded
        weights), each rank cutting its own from the whole copy it holds, then free the whole copy
        (meta placeholders in ``_module``). The rest (buffers FSDP2 leaves whole) moves to the device."""
        from torch.distributed.tensor import DTensor

        own = self._module.state_dict()
        for name, value in values.items():
            if _is_sharded(value):
                local = _local_part(own[name], value)
                self._shards[name] = DTensor.from_local(local, value.device_mesh, value.placements, run_check=False,
                                                        shape=value.shape, stride=value.stride())
                self._locals[name] = self._shards[name].to_local()
                _set_tensor(self._module, name, torch.empty_like(own[name], device="meta"))
            elif own[name].device != value.device:
                _set_tensor(self._module, name, own[name].to(value.device))
        kept = sum(t.numel() * t.element_size() for t in self._locals.values())
        log.info("EMA kept sharded like the FSDP2 weights: %d tensors, %.1f MiB on this rank", len(self._shards),
                 kept / 2**20)

    def gather(self, keep: bool = True) -> None:
        """Make the whole average for :attr:`module`, :meth:`state_dict` and :meth:`weights` (on
        CPU, until the next update). Under FSDP2 one all-gather per sharded weight, so every rank
        must call it at the same point; ranks with ``keep=False`` take part and drop the result.
        Does nothing when the average is not sharded, or when it was gathered after the last
        update or load (a checkpoint and a validation at the same step): every rank sees the same
        calls, so every rank skips alike and no collective is left waiting."""
        if not self._shards or (self._fresh and (not keep or self._gathered is not None)):
            return
        whole = {name: shard.full_tensor().cpu() for name, shard in self._shards.items()}  # collective
        self._fresh = True
        if not keep:
            return
        gathered = copy.deepcopy(self._module)  # copies the small unsharded rest; the placeholders are meta
        for name, tensor in whole.items():
            _set_tensor(gathered, name, tensor)
        self._gathered = gathered.cpu()

    def state_dict(self) -> dict:
        """Weights (CPU, whole) and the update count, ``torch.save``-able with ``weights_only=True``.
        Under FSDP2 after :meth:`gather`: the same whole weights as without sharding."""
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()},
                "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (whole weights); once sharded, each rank keeps its shards
        of them (cut locally: every rank loads the same checkpoint)."""
        weights = state["weights"]
        if not self._shards:
            self._module.load_state_dict(weights)
        else:
            own = self._module.state_dict()
            missing, unexpected = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
            if missing or unexpected:
                raise RuntimeError(f"EMA state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
            for name, whole in weights.items():
                if name in self._shards:
                    self._locals[name].copy_(_local_part(whole, self._shards[name]))
                else:
                    own[name].copy_(whole)
            self._gathered, self._fresh = None, False
        self.decay = float(state.get("decay", self.decay))
        self.updates = int(state.get("updates", 0))

    def weights(self) -> dict[str, torch.Tensor]:
        """The averaged weights as a flat tensor dict (for ``ema.safetensors``); under FSDP2 after
        :meth:`gather`."""
        return {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}

    def nbytes(self) -> int:
        """Bytes of the average this rank keeps between gathers: its shards and the unsharded rest
        under FSDP2, the whole state otherwise (placeholders and a gathered copy not counted)."""
        rest = self._module.state_dict().values()
        return sum(t.numel() * t.element_size() for t in (*self._locals.values(), *rest) if not t.is_meta)

    def module_on(self, device: torch.device) -> nn.Module:
        """The whole average as a module on ``device`` (for validation). Not sharded: :attr:`module`
        itself, moved there (it lives on the training device anyway). Under FSDP2: a copy of the
        gathered one, so the whole average leaves the device when the caller drops it instead of
        staying there through the following training steps."""
        if not self._shards:
            return self._module.to(device)
        return copy.deepcopy(self.module).to(device)

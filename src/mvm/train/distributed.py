"""Multi-process training through torchrun: DDP or FSDP2, one code path with single-process runs.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here is a no-op.
The backend is NCCL on GPUs and gloo on CPUs, so ``torchrun --nproc_per_node=2 -m mvm.cli pretrain``
works on a laptop as well as on a cluster (``--nnodes`` with a c10d rendezvous for several nodes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", info.local_rank) if device_name in ("auto", "cuda") else torch.device(device_name)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu" if device_name == "auto" else device_name)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        log.info("rank %d of %d on %s", info.rank, info.world, device)
    return info, device


def wrap_model(model: nn.Module, info: DistInfo, mode: str, device: torch.device) -> nn.Module:
    """DDP or FSDP2 (``fully_shard`` per transformer block, then the root) when distributed."""
    if not info.enabled:
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if type(module).__name__ == "Block":
                fully_shard(module)
        fully_shard(model)
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def all_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= info.world
    return x


class LaggedRead:
    """A device scalar the host reads one step late, so reading it never waits for the step just
    queued: on CUDA a non-blocking copy into pinned memory and an event, read at the next call
    (by then the device is working on the following step, which stays queued)."""

    def __init__(self) -> None:
        self._held: list[torch.Tensor] = []
        self._pending: tuple[torch.Tensor, torch.cuda.Event | None] | None = None

    def swap(self, value: torch.Tensor) -> float | None:
        """Queue ``value`` (0-dim); return the value queued by the previous call (None at first)."""
        previous = None
        if self._pending is not None:
            held, event = self._pending
            if event is not None:
                event.synchronize()
            previous = float(held)
        if value.is_cuda:
            if not self._held:  # two pinned buffers, used in turn: one is read while one is written
                self._held = [torch.empty((), dtype=value.dtype, pin_memory=True) for _ in range(2)]
            self._held.reverse()
            held = self._held[0]
            held.copy_(value, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (held, event)
        else:
            self._pending = (value.detach().clone(), None)
        return previous


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimiser state on CPU; collective under FSDP, so every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=dist.is_initialized())
    return get_state_dict(model, optimizer, options=opts)


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Inverse of :func:`full_state`, every rank passing the same full dicts."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

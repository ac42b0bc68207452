"""Checkpoints: weights as safetensors, optimiser and run state alongside, written atomically.

A checkpoint is a folder ``ckpt-STEP/`` holding ``model.safetensors``, ``state.pt`` (optimiser,
scaler, RNG and counters; loaded with ``weights_only=True``) and ``meta.json`` (step, config). The
folder is written under a temporary name and renamed when complete, so a kill mid-write leaves the
previous checkpoint loadable and never a half-written one that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and both sides of a mismatch."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_weights_folder(folder: str | os.PathLike, model: nn.Module | dict[str, torch.Tensor],
                        meta: dict[str, Any], extra: dict[str, dict[str, torch.Tensor]] | None = None,
                        state: dict[str, Any] | None = None, step: int | None = None,
                        metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.safetensors`` (+ ``<name>.safetensors`` per ``extra``, ``state.pt``) and
    ``meta.json`` into ``folder``, fsynced. Not atomic by itself: callers write to a temporary
    folder and rename it. ``metadata`` goes into the safetensors header (the model's spec, so
    ``mvm.interop.load_model`` rebuilds it exactly)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = model if isinstance(model, dict) else model.state_dict()
    save_file(_cpu(sd), str(folder / "model.safetensors"), metadata=metadata)
    for name, weights in (extra or {}).items():
        save_file(_cpu(weights), str(folder / f"{name}.safetensors"))
    if step is not None:
        _maybe_fault(step)
    if state is not None:
        torch.save(state, folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    return folder


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module | dict[str, torch.Tensor],
                    state: dict[str, Any], meta: dict[str, Any], keep: int = 2,
                    extra: dict[str, dict[str, torch.Tensor]] | None = None,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write ``run_dir/ckpt-{step:07d}`` atomically and prune all but the newest ``keep``.

    ``model`` is a module or an already gathered full state dict (FSDP); ``extra`` names further
    weight files (e.g. ``{"ema": ...}`` -> ``ema.safetensors``).
    """
    run_dir = Path(run_dir)
    final = run_dir / f"ckpt-{step:07d}"
    tmp = run_dir / f".tmp-ckpt-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_weights_folder(tmp, model, {"step": step, **meta}, extra=extra, state=state, step=step,
                        metadata=metadata)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    log.info("checkpoint written: %s", final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _maybe_fault(step: int) -> None:
    """Fault injection for the kill-during-write test: ``MVM_FAULT_KILL_IN_CHECKPOINT=STEP``
    SIGKILLs this process half-way through writing that step's checkpoint."""
    target = os.environ.get("MVM_FAULT_KILL_IN_CHECKPOINT")
    if target is not None and int(target) == step:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary folders are never listed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob("ckpt-*") if p.is_dir() and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint that loads (a damaged one is skipped with a warning)."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            json.loads((ckpt / "meta.json").read_text())
            if (ckpt / "model.safetensors").is_file() and (ckpt / "state.pt").is_file():
                return ckpt
        except (OSError, ValueError) as e:
            log.warning("skipping damaged checkpoint %s: %s", ckpt, e)
    return None


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The safetensors weights of a checkpoint folder or file."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def load_weights(model: nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load safetensors weights into ``model``, refusing any shape or key mismatch with both sides shown."""
    weights = read_weights(path)
    check_weights(model, weights, path)
    model.load_state_dict(weights)
    return weights


def check_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit this model:"]
        if shapes:
            lines += ["  shape mismatch " + s for s in shapes[:5]]
        if missing:
            lines.append(f"  missing in checkpoint: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            lines.append(f"  not in model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError("\n".join(lines))


def load_state(ckpt: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, meta)`` of a checkpoint folder; never unpickles code (``weights_only=True``)."""
    ckpt = Path(ckpt)
    try:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{ckpt / 'state.pt'}: cannot be loaded safely ({e})") from e
    meta = json.loads((ckpt / "meta.json").read_text())
    return state, meta

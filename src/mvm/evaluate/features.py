"""Frozen-encoder features of a data source, cached on disk (for ``mvm probe`` and ``mvm extract``).

A feature is the mean over all tokens of the encoder's output for the centre clip and centre crop
of a video: ``[dim]``. The cache file is keyed by the checkpoint (path, size and modification time
of every weight file it reads), the data source (path, size, modification time, format, root) and
the clip settings (frames, stride, size, normalisation), so a second probe of the same
checkpoint on the same data reads a file instead of running the encoder, and any change to
either computes afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mvm.config import DataConfig

log = logging.getLogger(__name__)

DEFAULT_CACHE = ".cache/mvm/features"


@dataclass
class Features:
    """Features ``[N, dim]`` float32, labels ``[N]`` long and the video paths, in source order
    (videos that failed to decode are left out and listed in ``failed``)."""

    features: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    failed: list[str]
    from_cache: bool = False


def checkpoint_data_config(ckpt: str | Path, **overrides: Any) -> DataConfig:
    """Clip settings for a checkpoint: defaults, then what the checkpoint records, then ``overrides``."""
    from mvm.train.finetune import checkpoint_geometry

    data = DataConfig()
    for key, value in checkpoint_geometry(ckpt).items():
        sec, name = key.split(".")
        if sec == "data":
            setattr(data, name, value)
    for name, value in overrides.items():
        if value is not None and value != "":
            setattr(data, name, value)
    return data


def _stamp(path: Path) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file, or of every file in a folder (sorted)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(ckpt: Path, source: str, data: DataConfig) -> str:
    """A hex digest of what the features depend on (see the module docstring)."""
    from mvm.train.finetune import resolve_init

    weights = resolve_init(ckpt)
    src = Path(source)
    what = {
        "ckpt": _stamp(weights) if weights.is_file() else
        [s for s in _stamp(weights) if s[0].endswith((".safetensors", ".bin", ".pth", ".json"))],
        "source": _stamp(src) if src.is_file() else [str(src.resolve()), src.stat().st_mtime_ns],
        "format": data.format, "root": str(Path(data.root).resolve()) if data.root else "",
        "clip": [data.frames, data.stride, data.size, list(data.mean), list(data.std)],
        "version": 1,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def compute_features(encoder: nn.Module, source: str, data: DataConfig, device: torch.device,
                     progress: Callable[[int], None] | None = None, batch_size: int = 8) -> Features:
    """Mean-pooled encoder features of the centre view of every video of ``source``."""
    from torch.utils.data import DataLoader

    from mvm.data.formats import open_source
    from mvm.evaluate.multiview import MultiViewDataset, collate_views

    entries = open_source(source, data.format, data.root).entries
    ds = MultiViewDataset(entries, data.frames, data.stride, data.size, 1, 1, data.mean, data.std)
    loader = DataLoader(ds, batch_size=batch_size, num_workers=data.workers, collate_fn=collate_views)
    encoder.eval().to(device)
    feats, labels, paths, failed = [], [], [], []
    for batch in loader:
        failed.extend(batch["failed"])
        if batch["views"].ndim == 6:
            tokens = encoder(batch["views"][:, 0].to(device))  # [B, N, dim]
            feats.append(tokens.float().mean(1).cpu())
            labels.append(batch["label"])
            paths.extend(batch["path"])
        if progress is not None:
            progress(len(batch["path"]) + len(batch["failed"]))
    if not feats:
        raise RuntimeError(f"{source}: no video could be decoded ({len(failed)} failed, e.g. {failed[:1]})")
    return Features(torch.cat(feats), torch.cat(labels), paths, failed)


def cached_features(ckpt: str | Path, source: str, data: DataConfig, device: torch.device,
                    cache_dir: str | Path = DEFAULT_CACHE, progress: Callable[[int], None] | None = None,
                    encoder: nn.Module | None = None) -> Features:
    """:func:`compute_features` of the checkpoint's encoder, served from ``cache_dir`` when the same
    checkpoint, data and clip settings were seen before (``from_cache`` says which)."""
    from safetensors.torch import load_file, save_file

    path = Path(cache_dir) / f"{cache_key(Path(ckpt), source, data)}.safetensors"
    if path.is_file():
        try:
            tensors = load_file(str(path))
            meta = json.loads(path.with_suffix(".json").read_text())
            log.info("features of %s from the cache %s", source, path)
            return Features(tensors["features"], tensors["labels"], meta["paths"], meta["failed"], True)
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring a damaged feature cache %s: %s", path, e)
    if encoder is None:
        from mvm.train.finetune import load_encoder

        encoder = load_encoder(ckpt, data.frames, data.size)
    feats = compute_features(encoder, source, data, device, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_file({"features": feats.features.contiguous(), "labels": feats.labels}, str(tmp))
    path.with_suffix(".json").write_text(json.dumps({"source": source, "data": dataclasses.asdict(data),
                                                     "paths": feats.paths, "failed": feats.failed}))
    os.replace(tmp, path)  # the tensors last: a cache entry is complete once they exist
    return feats


def write_features(feats: Features, out: str | Path) -> list[Path]:
    """Write features for users' own work: ``.safetensors`` (``features``, ``labels``; the paths in
    the header's ``paths`` metadata) or ``.npy`` (the ``[N, dim]`` array) with an index CSV
    (``index,path,label``) beside it. Returns the files written."""
    import csv

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"features": feats.features.contiguous(), "labels": feats.labels}, str(out),
                  metadata={"paths": json.dumps(feats.paths)})
        return [out]
    if out.suffix == ".npy":
        import numpy as np

        np.save(out, feats.features.numpy())
        index = out.with_suffix(".csv")
        with open(index, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "path", "label"])
            for i, (p, y) in enumerate(zip(feats.paths, feats.labels.tolist())):
                w.writerow([i, p, y])
        return [out, index]
    raise ValueError(f"{out}: the output must end in .safetensors or .npy")

"""The clip a checkpoint was made for (frames, side in pixels), read from wherever its source records it.

transformers fixes ``num_frames`` and ``image_size`` in its config, so an export needs them; mvm
models work at any grid, so their weights do not say. The sources that do say:

- a transformers folder: ``config.json`` (``num_frames``, ``image_size``);
- an mvm training checkpoint (``ckpt-*/meta.json``) or run folder (``config.toml``): ``data.frames``,
  ``data.size``;
- an mvm ``.safetensors`` / ``.pth`` written by :func:`mvm.interop.save_mvm` /
  :func:`mvm.interop.save_original` with a clip: the ``mvm_clip`` entry;
- an original VideoMAE ``.pth``: its ``args`` (``num_frames``, ``input_size``);
- a learned position table: its grid times the tubelet and patch.
"""

from __future__ import annotations

import argparse
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CLIP_KEY = "mvm_clip"
Clip = tuple[int | None, int | None]


def _side(v: Any) -> int | None:
    if isinstance(v, list | tuple):
        v = v[0] if v else None
    return int(v) if isinstance(v, int | float) and v > 0 else None


def _frames(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None


def _from_config(cfg: dict[str, Any]) -> Clip:
    data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
    return _frames(data.get("frames")), _side(data.get("size"))


def run_checkpoint(path: Path) -> Path | None:
    """The newest complete ``ckpt-*`` of a run folder, or None when ``path`` is not one."""
    from mvm.train.checkpoint import latest_checkpoint

    if not path.is_dir() or (path / "model.safetensors").is_file() or (path / "config.json").is_file():
        return None
    return latest_checkpoint(path)


def clip_from_pth(obj: Any) -> Clip:
    """Frames and size recorded in a loaded ``.pth`` object (mvm's ``mvm_clip``, else original ``args``)."""
    if not isinstance(obj, dict):
        return None, None
    mine = obj.get(CLIP_KEY)
    if isinstance(mine, dict):
        return _frames(mine.get("frames")), _side(mine.get("size"))
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        return _frames(getattr(args, "num_frames", None)), _side(getattr(args, "input_size", None))
    return None, None


def source_clip(path: str | Path) -> Clip:
    """``(frames, size)`` the checkpoint at ``path`` was made for; None for what it does not record.

    Never raises for an unreadable source (loading it reports that); it only answers what is known.
    """
    path = Path(path)
    try:
        if path.is_dir() and (path / "config.json").is_file():
            c = json.loads((path / "config.json").read_text())
            return _frames(c.get("num_frames")), _side(c.get("image_size"))
        ckpt = run_checkpoint(path)
        if ckpt is None and path.is_dir() and (path / "meta.json").is_file():
            ckpt = path
        if ckpt is not None:
            found = _from_config(json.loads((ckpt / "meta.json").read_text()).get("config", {}))
            if None not in found:
                return found
            toml = ckpt.parent / "config.toml"
            if toml.is_file():
                return _from_config(tomllib.loads(toml.read_text()))
            return found
        if path.suffix == ".safetensors" and path.is_file():
            from mvm.interop.load import read_safetensors

            meta = read_safetensors(path)[1]
            if CLIP_KEY in meta:
                d = json.loads(meta[CLIP_KEY])
                return _frames(d.get("frames")), _side(d.get("size"))
            return None, None
        if path.is_file():
            from mvm.interop.load import read_pth

            return clip_from_pth(read_pth(path))
    except (OSError, ValueError, AttributeError) as e:  # InteropError is a ValueError
        log.debug("no clip size readable from %s: %s", path, e)
    return None, None

"""``mvm convert``: move weights between transformers' VideoMAE, the original VideoMAE and mvm."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "convert a checkpoint between transformers VideoMAE, original VideoMAE (.pth) and mvm (.safetensors)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="transformers folder, original .pth, mvm .safetensors or mvm checkpoint folder")
    p.add_argument("dst", help="output: a folder (transformers), a .safetensors file (mvm) or a .pth file (original)")
    p.add_argument("--to", choices=["transformers", "mvm", "original"],
                   help="output format (default: from DST: .safetensors -> mvm, .pth -> original, else transformers)")
    p.add_argument("--frames", type=int, help="clip length written into a transformers config (default: the "
                   "source's, else 16); also lays out a learned pos_embed")
    p.add_argument("--size", type=int, help="clip side written into a transformers config (default: the source's, else 224)")
    p.add_argument("--heads", type=int, help="encoder heads, when they cannot be inferred (default: named size by width, else dim/64)")
    p.add_argument("--decoder-heads", type=int, help="decoder heads, when they cannot be inferred")


def _target(dst: str, to: str | None) -> str:
    if to:
        return to
    suffix = Path(dst).suffix
    return "mvm" if suffix == ".safetensors" else "original" if suffix in (".pth", ".pt") else "transformers"


def _source_clip(src: Path) -> tuple[int | None, int | None]:
    """Frames and size recorded in a transformers source config, if any."""
    cfg = src / "config.json"
    if not (src.is_dir() and cfg.is_file()):
        return None, None
    try:
        c = json.loads(cfg.read_text())
    except ValueError:
        return None, None
    size = c.get("image_size")
    return c.get("num_frames"), size[0] if isinstance(size, list) else size


def run(args: argparse.Namespace) -> int:
    from mvm.interop import (
        InteropError,
        export_transformers,
        load_model,
        save_mvm,
        save_original,
        spec_from_model,
    )

    src = Path(args.src)
    to = _target(args.dst, args.to)
    src_frames, src_size = _source_clip(src)
    frames = args.frames or src_frames or 16
    size = args.size or src_size or 224
    try:
        model = load_model(src, heads=args.heads, decoder_heads=args.decoder_heads, frames=frames, size=size)
        if to == "transformers":
            out = export_transformers(model, args.dst, frames=frames, size=size)
        elif to == "mvm":
            out = save_mvm(model, args.dst)
        else:
            out = save_original(model, args.dst)
    except InteropError as e:
        print(f"mvm convert: {e}", file=sys.stderr)
        return 1
    spec = spec_from_model(model)
    n = sum(p.numel() for p in model.parameters())
    print(f"{src} -> {out} ({to}): {spec.kind}, dim {spec.dim}, depth {spec.depth}, heads {spec.heads}, "
          f"tubelet {spec.tubelet}x{spec.patch}x{spec.patch}, {n / 1e6:.2f}M parameters")
    return 0

"""``mvm convert``: move weights between transformers' VideoMAE, the original VideoMAE and mvm."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "convert a checkpoint between transformers VideoMAE, original VideoMAE (.pth) and mvm (.safetensors)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="transformers folder, original .pth, mvm .safetensors, mvm checkpoint folder or run folder")
    p.add_argument("dst", help="output: a folder (transformers), a .safetensors file (mvm) or a .pth file (original)")
    p.add_argument("--to", choices=["transformers", "mvm", "original"],
                   help="output format (default: from DST: .safetensors -> mvm, .pth -> original, else transformers)")
    p.add_argument("--frames", type=int, help="clip length written into a transformers config (default: the "
                   "source's config or training run, else 16); also lays out a learned pos_embed")
    p.add_argument("--size", type=int, help="clip side written into a transformers config (default: the source's config or training run, "
                   "else 224)")
    p.add_argument("--heads", type=int, help="encoder heads, when they cannot be inferred (default: named size by width, else dim/64)")
    p.add_argument("--decoder-heads", type=int, help="decoder heads, when they cannot be inferred")


def _target(dst: str, to: str | None) -> str:
    if to:
        return to
    suffix = Path(dst).suffix
    return "mvm" if suffix == ".safetensors" else "original" if suffix in (".pth", ".pt") else "transformers"


def run(args: argparse.Namespace) -> int:
    from mvm.interop import (
        InteropError,
        export_transformers,
        load_model,
        save_mvm,
        save_original,
        source_clip,
        spec_from_model,
    )

    src = Path(args.src)
    to = _target(args.dst, args.to)
    for flag, v in (("--frames", args.frames), ("--size", args.size)):
        if v is not None and v < 1:
            print(f"mvm convert: {flag} must be >= 1, got {v}", file=sys.stderr)
            return 2
    src_frames, src_size = source_clip(src)
    frames, size = args.frames or src_frames, args.size or src_size
    try:
        model = load_model(src, heads=args.heads, decoder_heads=args.decoder_heads, frames=frames, size=size)
        spec = spec_from_model(model)
        if spec.pos_grid is not None:  # a learned position table fixes the clip it was made for
            frames = frames or spec.pos_grid[0] * spec.tubelet
            size = size or spec.pos_grid[1] * spec.patch
        note = ""
        if to == "transformers":
            if frames is None or size is None:
                note = (f"; {src} does not record its clip: wrote transformers' defaults for what is missing "
                        "(pass --frames/--size to set them)")
                frames, size = frames or 16, size or 224
            _check_divisible(frames, size, spec.tubelet, spec.patch)
            out = export_transformers(model, args.dst, frames=frames, size=size)
        elif to == "mvm":
            out = save_mvm(model, args.dst, frames=frames, size=size)
        else:
            out = save_original(model, args.dst, frames=frames, size=size)
    except InteropError as e:  # about the SRC or flags the user gave: one line, exit 2
        print(f"mvm convert: {e}", file=sys.stderr)
        return 2
    n = sum(p.numel() for p in model.parameters())
    clip = f", clip {frames} frames x {size} px" if frames and size else ""
    print(f"{src} -> {out} ({to}): {spec.kind}, dim {spec.dim}, depth {spec.depth}, heads {spec.heads}, "
          f"tubelet {spec.tubelet}x{spec.patch}x{spec.patch}{clip}, {n / 1e6:.2f}M parameters{note}")
    return 0


def _check_divisible(frames: int, size: int, tubelet: int, patch: int) -> None:
    from mvm.interop import InteropError

    if frames % tubelet or size % patch:
        raise InteropError(f"a {frames}-frame, {size}-px clip does not divide into {tubelet}x{patch}x{patch} "
                           "tubelets: pass --frames/--size that do")

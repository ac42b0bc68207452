"""``mvm extract``: write frozen-encoder features of a data set for your own downstream work."""

from __future__ import annotations

import argparse
import sys

HELP = "write mean-pooled encoder features of every video (.safetensors, or .npy + an index CSV)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.commands.probe import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--data", required=True, help="list file, annotation file or folder of videos")
    p.add_argument("--out", required=True, help="FILE.safetensors (features, labels; paths in the header) or "
                                                "FILE.npy (+ FILE.csv: index,path,label)")


def run(args: argparse.Namespace) -> int:
    from mvm.commands.probe import data_config, device_of, features_for
    from mvm.data.formats import DataSourceError, check_source
    from mvm.evaluate.features import write_features
    from mvm.interop.load import InteropError
    from mvm.train.checkpoint import CheckpointError

    if not args.out.endswith((".safetensors", ".npy")):
        print(f"mvm extract: --out {args.out}: must end in .safetensors or .npy", file=sys.stderr)
        return 2
    try:
        check_source(args.data, args.format, args.root)
        feats = features_for(args, args.data, data_config(args), device_of(args.device))
    except (DataSourceError, CheckpointError, InteropError, RuntimeError) as e:
        print(f"mvm extract: {e}", file=sys.stderr)
        return 2
    files = write_features(feats, args.out)
    print(f"{len(feats.paths)} videos x {feats.features.shape[1]} features -> {', '.join(map(str, files))}"
          f"{f' ({len(feats.failed)} unreadable, left out)' if feats.failed else ''}")
    return 0

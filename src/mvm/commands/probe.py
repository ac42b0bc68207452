"""``mvm probe``: kNN and linear probe on frozen mean-pooled features of any loadable encoder."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "kNN and linear probe of a frozen encoder (features cached: a second probe takes seconds)"


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``CKPT``, ``--format``, ``--root``, ``--frames/--size/--stride``, ``--cache``, ``--device``."""
    p.add_argument("ckpt", metavar="CKPT", help="mvm run or checkpoint folder, .safetensors, transformers folder "
                                                "or original VideoMAE .pth")
    p.add_argument("--format", default="", help="annotation format of the data (default: detected)")
    p.add_argument("--root", default="", help="folder the annotations' video paths are relative to")
    p.add_argument("--frames", type=int, help="frames per clip (default: the checkpoint's, else 16)")
    p.add_argument("--stride", type=int, help="temporal stride (default: the checkpoint's, else 4)")
    p.add_argument("--size", type=int, help="crop size (default: the checkpoint's, else 224)")
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--cache", default=".cache/mvm/features", help="feature cache folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def device_of(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_config(args: argparse.Namespace):
    from mvm.evaluate.features import checkpoint_data_config

    return checkpoint_data_config(args.ckpt, frames=args.frames, stride=args.stride, size=args.size,
                                  format=args.format, root=args.root, workers=args.workers)


def features_for(args: argparse.Namespace, source: str, data, device, encoder=None):
    """Cached features of ``source`` with a progress bar while computing."""
    from tqdm import tqdm

    from mvm.evaluate.features import cached_features

    with tqdm(desc=f"features {source}", unit="video", file=sys.stderr, dynamic_ncols=True, leave=False) as bar:
        return cached_features(args.ckpt, source, data, device, args.cache, progress=bar.update, encoder=encoder)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p)
    p.add_argument("--train", required=True, help="labelled data for the kNN bank and the linear head")
    p.add_argument("--val", required=True, help="labelled data the probes are scored on")
    p.add_argument("--k", type=int, default=20, help="neighbours of the kNN probe")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from mvm.data.formats import DataSourceError, check_source
    from mvm.evaluate.probe import knn_accuracy, linear_probe_accuracy
    from mvm.interop.load import InteropError
    from mvm.train.checkpoint import CheckpointError

    t0 = time.perf_counter()
    try:
        for source in (args.train, args.val):
            unlabelled = sum(e.label < 0 for e in check_source(source, args.format, args.root).entries)
            if unlabelled:
                raise DataSourceError(f"{source}: {unlabelled} videos have no label (a folder needs one "
                                      "sub-folder per class; a list needs 'path label' lines)")
        data = data_config(args)
        device = device_of(args.device)
        train = features_for(args, args.train, data, device)
        val = features_for(args, args.val, data, device)
    except (DataSourceError, CheckpointError, InteropError, RuntimeError) as e:
        print(f"mvm probe: {e}", file=sys.stderr)
        return 2
    result = {"knn_top1": knn_accuracy(train.features, train.labels, val.features, val.labels, k=args.k),
              "linear_top1": linear_probe_accuracy(train.features, train.labels, val.features, val.labels),
              "train_videos": len(train.paths), "val_videos": len(val.paths),
              "failed": len(train.failed) + len(val.failed), "feature_dim": int(train.features.shape[1]),
              "from_cache": train.from_cache and val.from_cache, "seconds": round(time.perf_counter() - t0, 2)}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"kNN top-1 (k={args.k})   {result['knn_top1']:.1%}")
    print(f"linear top-1        {result['linear_top1']:.1%}")
    print(f"videos              {result['train_videos']} train, {result['val_videos']} val"
          f"{', ' + str(result['failed']) + ' unreadable' if result['failed'] else ''}; features of "
          f"{result['feature_dim']} dims{' (from the cache)' if result['from_cache'] else ''}; "
          f"{result['seconds']:.1f} s")
    return 0

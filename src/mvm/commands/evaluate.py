"""``mvm evaluate``: multi-view test of a fine-tuned classifier (top-1, top-5, mean class accuracy)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

HELP = "multi-view test of a classifier: top-1/top-5, mean class accuracy, confusion matrix, predictions CSV"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from mvm.commands.probe import add_data_arguments

    add_data_arguments(p)
    p.add_argument("--data", required=True, help="labelled list file, annotation file or folder of videos")
    p.add_argument("--views", default="1x1", help="CLIPSxCROPS per video, e.g. 5x3 (Kinetics) or 2x3 (SSv2)")
    p.add_argument("--out", help="folder for metrics.json, predictions.csv, confusion.png "
                                 "(default: runs/evaluate-<time>)")
    p.add_argument("--batch", type=int, default=4, help="videos per batch")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def load_classifier(ckpt: str, frames: int, size: int):
    """The classifier in ``ckpt`` (a fine-tuning run folder gives its best/ checkpoint)."""
    from mvm.models.classifier import VideoClassifier
    from mvm.train.checkpoint import CheckpointError
    from mvm.train.finetune import load_any, resolve_init

    path = resolve_init(ckpt)
    model = load_any(path, frames=frames, size=size)
    if not isinstance(model, VideoClassifier):
        raise CheckpointError(f"{path}: holds an encoder without a classification head; fine-tune it first "
                              "(mvm finetune --init ...) or probe it (mvm probe)")
    return model, path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mvm.commands.probe import data_config, device_of
    from mvm.config import Config
    from mvm.data.formats import DataSourceError, check_source
    from mvm.evaluate.multiview import classification_metrics, parse_views
    from mvm.interop.load import InteropError
    from mvm.train.checkpoint import CheckpointError
    from mvm.train.finetune import predict_source
    from mvm.viz.confusion import class_names

    t0 = time.perf_counter()
    try:
        clips, crops = parse_views(args.views)
        source = check_source(args.data, args.format, args.root)
        cfg = Config()
        cfg.data = data_config(args)
        model, path = load_classifier(args.ckpt, cfg.data.frames, cfg.data.size)
    except (ValueError, CheckpointError, InteropError) as e:  # DataSourceError is a ValueError
        print(f"mvm evaluate: {e}", file=sys.stderr)
        return 2
    device = device_of(args.device)
    model.to(device)
    with tqdm(total=len(source.entries), desc=f"evaluate {args.views}", unit="video", file=sys.stderr,
              dynamic_ncols=True) as bar:
        try:
            pred = predict_source(model, cfg, args.data, clips, crops, device, progress=bar.update,
                                  batch_size=args.batch)
        except (DataSourceError, RuntimeError) as e:
            print(f"mvm evaluate: {e}", file=sys.stderr)
            return 2
    probs, labels = pred["probs"], pred["labels"]
    k = probs.shape[1]
    bad = labels.ge(k) | labels.lt(0)
    if bool(bad.any()):
        print(f"mvm evaluate: {int(bad.sum())} labels outside the model's {k} classes, e.g. "
              f"{pred['paths'][int(bad.nonzero()[0])]} has {int(labels[bad][0])}", file=sys.stderr)
        return 2
    metrics = {**classification_metrics(probs, labels), "videos": len(labels), "failed": len(pred["failed"]),
               "views": args.views, "checkpoint": str(path), "seconds": round(time.perf_counter() - t0, 2)}
    out = Path(args.out or time.strftime("runs/evaluate-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    names = source.classes[:k] if len(source.classes) >= k else class_names(args.data, k)
    _write_outputs(out, pred, metrics, names)
    metrics["out"] = str(out)
    if args.json:
        print(json.dumps(metrics, indent=1))
        return 0
    print(f"top-1 {metrics['top1']:.1%}   top-5 {metrics['top5']:.1%}   mean class accuracy "
          f"{metrics['mean_class_acc']:.1%}   ({metrics['videos']} videos x {args.views} views"
          f"{', ' + str(metrics['failed']) + ' unreadable' if metrics['failed'] else ''})")
    print(f"written to {out}: metrics.json, predictions.csv, confusion.png")
    return 0


def _write_outputs(out: Path, pred: dict, metrics: dict, names: list[str]) -> None:
    """metrics.json, predictions.csv (path, label, top-5 classes and scores) and confusion.png."""
    from mvm.evaluate.multiview import confusion_matrix
    from mvm.viz.confusion import plot_confusions

    probs, labels = pred["probs"], pred["labels"]
    k = probs.shape[1]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    top = probs.topk(min(5, k), dim=1)
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"] + [f"{c}{i}" for i in range(1, top.indices.shape[1] + 1)
                                         for c in ("class", "score")])
        for path, y, cls, sc in zip(pred["paths"], labels.tolist(), top.indices.tolist(), top.values.tolist()):
            w.writerow([path, y] + [v for c, s in zip(cls, sc) for v in (c, f"{s:.4f}")])
    cm = confusion_matrix(probs.argmax(1), labels, k)
    plot_confusions({f"{metrics['views']} views": cm.tolist()}, names, out / "confusion.png",
                    title=str(metrics["checkpoint"]))

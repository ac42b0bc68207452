"""Dataset annotation formats as data: one small parser per format, chosen by name or detected.

A parser reads one annotation source and returns :class:`Entry` rows (path, label, optional
frame span), the class names it knows, and one message per line it could not use. Adding a
format is one function plus ``@register("name")``; :func:`open_source` is the only entry point
the rest of mvm uses (dataset, ``mvm data check``, ``mvm prepare``), so every command reads a
list the same way.

Paths: relative paths in annotation files resolve against ``root`` (``--root`` /
``data.root``), by default the folder holding the annotation file (for a folder source, the
folder itself). Frame spans are 0-based, ``end`` exclusive (``frames[start:end]``); formats
that count from 1 (EPIC-KITCHENS) are converted.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")


class DataSourceError(ValueError):
    """A data source cannot be used at all (missing, empty, unreadable, ambiguous).

    The message is one line naming the path and what is wrong; the CLI prints it and exits 2
    before anything is written.
    """


class Entry(NamedTuple):
    """One sample: a video file or image-frame folder, its label (-1: none) and an optional
    frame span ``[start, end)`` (0-based, end exclusive; None: from the first / to the last frame)."""

    path: str
    label: int
    start: int | None = None
    end: int | None = None


@dataclass
class Source:
    """What :func:`open_source` read: entries, class names (index = label; may be empty) and
    ``"file:line: problem"`` messages for lines that were skipped."""

    path: str
    format: str
    entries: list[Entry]
    classes: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


Parsed = tuple[list[Entry], list[str], list[str]]
Parser = Callable[[Path, Path, dict[str, str]], Parsed]
FORMATS: dict[str, Parser] = {}


def register(name: str) -> Callable[[Parser], Parser]:
    """Add a parser ``(source, root, options) -> (entries, classes, malformed)`` under ``name``."""

    def add(fn: Parser) -> Parser:
        FORMATS[name] = fn
        return fn

    return add


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _resolve(root: Path, rel: str) -> str:
    return rel if os.path.isabs(rel) else str(root / rel)


def _first_existing(candidates: list[Path]) -> str:
    """The first candidate that exists, else the first (so a missing file is reported there)."""
    return str(next((c for c in candidates if c.exists()), candidates[0]))


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in required if not rows or c not in rows[0]]
    if rows and missing:
        raise DataSourceError(f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(rows[0])})")
    return rows


# --- formats ----------------------------------------------------------------------------------


@register("videomae")
def parse_videomae(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """VideoMAE lists: ``path label`` (space separated; the LAST field is the label, so paths
    may hold spaces), ``path,label``, or ``path`` alone (label -1). ``#`` comments, blank lines
    and a CSV header (last field ``label``/``class``/``target``) are skipped."""
    entries, malformed = [], []
    first = True
    for number, raw in enumerate(_lines(source), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "," in line:
            fields = [f.strip() for f in line.split(",")]
        else:
            fields = line.rsplit(None, 1)
        header, first = first and fields[-1].lower() in ("label", "labels", "class", "target"), False
        if header:
            continue
        label = _int(fields[-1]) if len(fields) == 2 else None
        if len(fields) == 2 and label is not None and fields[0]:
            entries.append(Entry(_resolve(root, fields[0]), label))
        elif len(fields) == 1 or ("," not in line and line.lower().endswith(VIDEO_SUFFIXES)):
            entries.append(Entry(_resolve(root, line), -1))  # a path alone, possibly with spaces
        else:
            malformed.append(f"{source}:{number}: expected 'path label' (label an integer), got {line!r}")
    return entries, [], malformed


def scan_folder(folder: Path) -> tuple[list[Entry], list[str]]:
    """Every video file under ``folder``; label = index of its top sub-folder among the sorted
    sub-folder names, or -1 for files directly in ``folder``. Entries are sorted by path."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    tops = [p.relative_to(folder).parts[0] if p.parent != folder else None for p in files]
    classes = sorted({t for t in tops if t is not None})
    index = {name: i for i, name in enumerate(classes)}
    return [Entry(str(p), -1 if t is None else index[t]) for p, t in zip(files, tops)], classes


@register("folder")
def parse_folder(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """A class-per-folder tree (``<source>/<class>/**/video``); files directly in it get label -1."""
    entries, classes = scan_folder(source)
    return entries, classes, []


@register("ucf101")
def parse_ucf101(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """UCF101 split files (``trainlist01.txt``: ``Class/v_Class_g08_c01.avi 1``; ``testlist01.txt``:
    path only) with ``classInd.txt`` beside them; the label is the class folder's index - 1."""
    ind = source.parent / "classInd.txt"
    if not ind.is_file():
        raise DataSourceError(f"{source}: UCF101 split file without classInd.txt beside it ({ind})")
    pairs = [line.split() for line in _lines(ind) if line.strip()]
    classes = [name for _, name in sorted((int(i), name) for i, name in pairs)]
    index = {name.lower(): i for i, name in enumerate(classes)}
    entries, malformed = [], []
    for number, raw in enumerate(_lines(source), 1):
        fields = raw.split()
        if not fields:
            continue
        rel = fields[0].replace("\\", "/")
        label = index.get(rel.split("/")[0].lower())
        if label is None and len(fields) > 1 and _int(fields[1]) is not None:
            label = int(fields[1]) - 1
        if label is None or len(fields) > 2:
            malformed.append(f"{source}:{number}: expected 'Class/video.avi [index]' with a class of "
                             f"classInd.txt, got {raw.strip()!r}")
            continue
        entries.append(Entry(_resolve(root, rel), label))
    return entries, classes, malformed


_HMDB = re.compile(r"^(.+)_test_split(\d+)\.txt$")


@register("hmdb51")
def parse_hmdb51(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """HMDB51 splits: SOURCE is the folder of ``<class>_test_split<N>.txt`` files (lines
    ``video.avi 1|2|0``: train, test, unused); options ``split`` (1-3, default 1) and ``subset``
    (train or test, default train). Videos: ``<root>/<class>/<video.avi>``; classes sorted."""
    split, subset = opts.get("split", "1"), opts.get("subset", "train")
    if subset not in ("train", "test"):
        raise DataSourceError(f"{source}: HMDB51 subset must be train or test, got {subset!r}")
    want = "1" if subset == "train" else "2"
    files = sorted(p for p in source.glob(f"*_test_split{split}.txt"))
    if not files:
        raise DataSourceError(f"{source}: no HMDB51 split files *_test_split{split}.txt")
    classes = [_HMDB.match(p.name).group(1) for p in files]  # type: ignore[union-attr]
    entries, malformed = [], []
    for label, (name, path) in enumerate(zip(classes, files)):
        for number, raw in enumerate(_lines(path), 1):
            fields = raw.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                malformed.append(f"{path}:{number}: expected 'video.avi 0|1|2', got {raw.strip()!r}")
            elif fields[1] == want:
                entries.append(Entry(str(root / name / fields[0]), label))
    return entries, classes, malformed


@register("kinetics")
def parse_kinetics(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """Kinetics CSV ``label,youtube_id,time_start,time_end,split``; files
    ``<root>/<label>/<id>_<start:06d>_<end:06d>.mp4`` (also with ``_`` for spaces in the class
    folder) or flat ``<root>/<id>_...mp4``. Class index = position among the sorted label names."""
    rows = _read_csv(source, ("youtube_id", "time_start", "time_end"))
    classes = sorted({r["label"] for r in rows if r.get("label")})
    index = {name: i for i, name in enumerate(classes)}
    entries, malformed = [], []
    for number, r in enumerate(rows, 2):
        try:
            name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}.mp4"
        except (TypeError, ValueError):
            malformed.append(f"{source}:{number}: time_start/time_end must be numbers, got {r}")
            continue
        label = r.get("label") or ""
        cands = [root / label / name, root / label.replace(" ", "_") / name] if label else []
        entries.append(Entry(_first_existing([*cands, root / name]), index.get(label, -1)))
    return entries, classes, malformed


@register("ssv2")
def parse_ssv2(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """Something-Something v2 JSON (``[{"id", "template", ...}]``); labels from ``labels.json``
    or ``something-something-v2-labels.json`` beside it (template with ``[]`` removed -> index).
    Videos ``<root>/<id>.webm``; items without a template (the test set) get label -1."""
    names = [source.parent / "labels.json", source.parent / "something-something-v2-labels.json"]
    labels_file = next((p for p in names if p.is_file()), None)
    if labels_file is None:
        raise DataSourceError(f"{source}: SSv2 annotations without labels.json or "
                              f"something-something-v2-labels.json beside them")
    table = {k: int(v) for k, v in json.loads(labels_file.read_text(encoding="utf-8")).items()}
    classes = [k for k, _ in sorted(table.items(), key=lambda kv: kv[1])]
    entries, malformed = [], []
    for number, item in enumerate(json.loads(source.read_text(encoding="utf-8"))):
        template = str(item.get("template", "")).replace("[", "").replace("]", "")
        if "id" not in item or (template and template not in table):
            malformed.append(f"{source}: item {number}: no id or unknown template {template!r}")
            continue
        entries.append(Entry(str(root / f"{item['id']}.webm"), table[template] if template else -1))
    return entries, classes, malformed


@register("diving48")
def parse_diving48(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """Diving48 JSON ``[{"vid_name", "label", "start_frame", "end_frame"}]`` (span end exclusive);
    videos ``<root>/rgb/<vid_name>.mp4`` or ``<root>/<vid_name>.mp4``."""
    entries, malformed = [], []
    for number, item in enumerate(json.loads(source.read_text(encoding="utf-8"))):
        try:
            name, label = str(item["vid_name"]), int(item["label"])
            start, end = item.get("start_frame"), item.get("end_frame")
            span = (None if start is None else int(start), None if end is None else int(end))
        except (KeyError, TypeError, ValueError):
            malformed.append(f"{source}: item {number}: expected vid_name, label, start_frame, end_frame")
            continue
        path = _first_existing([root / "rgb" / f"{name}.mp4", root / f"{name}.mp4"])
        entries.append(Entry(path, label, *span))
    return entries, [], malformed


@register("epic100")
def parse_epic100(source: Path, root: Path, opts: dict[str, str]) -> Parsed:
    """EPIC-KITCHENS-100 CSV (``video_id, start_frame, stop_frame, verb_class``, ...); label =
    verb_class. Frames count from 1 and ``stop_frame`` is included: span ``[start-1, stop)``.
    Videos ``<root>/<participant_id>/videos/<video_id>.MP4``, ``<root>/<video_id>.MP4`` or the
    frame folder ``<root>/<participant_id>/rgb_frames/<video_id>/``."""
    rows = _read_csv(source, ("video_id", "start_frame", "stop_frame", "verb_class"))
    verbs: dict[int, str] = {}
    entries, malformed = [], []
    for number, r in enumerate(rows, 2):
        try:
            vid, label = r["video_id"], int(r["verb_class"])
            start, stop = int(r["start_frame"]), int(r["stop_frame"])
        except (TypeError, ValueError):
            malformed.append(f"{source}:{number}: start_frame, stop_frame, verb_class must be integers")
            continue
        verbs.setdefault(label, r.get("verb") or str(label))
        pid = r.get("participant_id") or vid.split("_")[0]
        path = _first_existing([root / pid / "videos" / f"{vid}.MP4", root / f"{vid}.MP4",
                                root / pid / "rgb_frames" / vid])
        entries.append(Entry(path, label, max(0, start - 1), stop))
    classes = [verbs.get(i, str(i)) for i in range(max(verbs) + 1)] if verbs else []
    return entries, classes, malformed


# --- choosing and opening ---------------------------------------------------------------------


def detect_format(source: str | os.PathLike) -> str:
    """The format name a source looks like (used when ``data.format`` is empty)."""
    p = Path(source)
    if p.is_dir():
        return "hmdb51" if any(p.glob("*_test_split1.txt")) else "folder"
    suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise DataSourceError(f"{p}: cannot read JSON annotations ({e})") from e
        first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        return "diving48" if "vid_name" in first else "ssv2"
    try:
        with open(p, encoding="utf-8") as fh:
            head = fh.readline().strip().lower()
    except (OSError, UnicodeDecodeError) as e:
        raise DataSourceError(f"{p}: cannot read the list ({type(e).__name__}: {e})") from e
    columns = [c.strip() for c in head.split(",")]
    if "youtube_id" in columns and "time_start" in columns:
        return "kinetics"
    if "video_id" in columns and "verb_class" in columns:
        return "epic100"
    if (p.parent / "classInd.txt").is_file() and p.name.lower().startswith(("trainlist", "testlist")):
        return "ucf101"
    return "videomae"


def parse_format(spec: str) -> tuple[str, dict[str, str]]:
    """``"hmdb51:split=2,subset=test"`` -> ``("hmdb51", {"split": "2", "subset": "test"})``."""
    name, _, rest = spec.partition(":")
    opts = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise DataSourceError(f"format option {item!r} in {spec!r} must read key=value")
        opts[key.strip()] = value.strip()
    return name.strip().lower(), opts


def open_source(source: str | os.PathLike, fmt: str = "", root: str | os.PathLike = "",
                **options: str | int) -> Source:
    """Read an annotation source in format ``fmt`` (empty: detected; may carry options, e.g.
    ``hmdb51:split=1,subset=test``; keyword ``options`` override those).

    Raises:
        DataSourceError: missing path, several sources joined by commas, unknown format,
            unreadable or malformed annotation file, no videos at all.
    """
    text = os.fspath(source)
    p = Path(text)
    if not text:
        raise DataSourceError("no data source given")
    if "," in text and not p.exists():
        raise DataSourceError(f"{text}: several sources joined by commas; give one list file or folder")
    if not p.exists():
        raise DataSourceError(f"{p}: no such list file or folder")
    name, opts = parse_format(fmt or detect_format(p))
    opts.update({k: str(v) for k, v in options.items() if v is not None and v != ""})
    if name not in FORMATS:
        raise DataSourceError(f"{p}: unknown data format {name!r}; one of {', '.join(sorted(FORMATS))}")
    if p.is_dir() != (name in ("folder", "hmdb51")):
        kind = "a folder" if p.is_dir() else "a file"
        raise DataSourceError(f"{p}: is {kind}, which format {name!r} does not read")
    base = Path(root) if root else (p if p.is_dir() else p.parent)
    if root and not base.is_dir():
        raise DataSourceError(f"{base}: data root is not a folder")
    try:
        entries, classes, malformed = FORMATS[name](p, base, opts)
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError, AttributeError, TypeError) as e:
        raise DataSourceError(f"{p}: cannot read {name} annotations ({type(e).__name__}: {e})") from e
    if not entries:
        raise DataSourceError(_nothing_usable(p, name, malformed))
    return Source(str(p), name, entries, classes, malformed)


def _nothing_usable(p: Path, name: str, malformed: list[str]) -> str:
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file()]
        if files:
            return f"no videos in {p} ({len(files)} file(s), none a video, e.g. {files[0].name})"
        return f"no videos in {p} (the folder is empty)"
    if malformed:
        return f"no usable lines in {p} ({len(malformed)} malformed, e.g. {malformed[0]})"
    return f"no videos in {p} (no entries in the {name} annotations)"


def check_source(source: str | os.PathLike, fmt: str = "", root: str | os.PathLike = "",
                 probe: int = 8, **options: str | int) -> Source:
    """:func:`open_source` plus a cheap look at up to ``probe`` entries spread over the list
    (container headers only). Raises :class:`DataSourceError` when none of them is a readable
    video, e.g. a folder whose only ``.mp4`` is a renamed text file. Meant to run before a
    command writes anything."""
    from mvm.data.video_io import VideoDecodeError, count_frames

    src = open_source(source, fmt, root, **options)
    n = len(src.entries)
    picks = sorted({round(i * (n - 1) / max(1, probe - 1)) for i in range(min(probe, n))})
    problems = []
    for i in picks:
        try:
            count_frames(src.entries[i].path)
            return src
        except VideoDecodeError as e:
            problems.append(f"{e.path}: {e.reason}")
    raise DataSourceError(f"{src.path}: none of the {len(picks)} video(s) checked can be read "
                          f"(e.g. {problems[0]})")

"""Issue: bad videos never crash a run. A corpus of every kind of bad file mixed with good videos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from mvm.config import load_config
from mvm.data.video_io import encode_video
from mvm.train.pretrain import run_pretrain

pytestmark = pytest.mark.slow


def _frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (t, h, w, 3), dtype=np.uint8)


def _vfr_video(path: Path) -> None:
    """H.264 with irregular timestamps (variable frame rate)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i, img in enumerate(_frames(12, 32, 32, 3)):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = pts, Fraction(1, 1000)
            pts += 20 if i % 2 else 60
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode():
            out.mux(p)


def build_corpus(root: Path) -> tuple[Path, dict[str, int]]:
    """Write good and bad files and a list mixing them; returns the list and the expected counts."""
    root.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for i in range(8):  # good clips, labels 0..3
        encode_video(root / f"good{i}.mp4", _frames(16, 32, 32, i))
        lines.append(f"good{i}.mp4 {i % 4}")
    # odd but usable: one frame, short, tiny, odd resolution, variable frame rate -> padded / resized
    encode_video(root / "one_frame.mp4", _frames(1, 32, 32))
    encode_video(root / "short.mp4", _frames(3, 32, 32))
    encode_video(root / "tiny.mp4", _frames(16, 16, 16))
    encode_video(root / "odd.mp4", _frames(16, 34, 46))
    _vfr_video(root / "vfr.mp4")
    lines += ["one_frame.mp4 0", "short.mp4 1", "tiny.mp4 2", "odd.mp4 3", "vfr.mp4 0"]
    # bad: each must be skipped and counted by reason
    (root / "zero.mp4").write_bytes(b"")
    good = (root / "good0.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    _audio_only(root / "audio.wav")
    lines += ["zero.mp4 0", "truncated.mp4 1", "text.mp4 2", "audio.wav 3", "missing.mp4 0", "good1.mp4 99"]
    lines += ["good3.mp4 1 extra", "good2.mp4 notalabel"]
    lst = root / "train.txt"
    lst.write_text("\n".join(lines) + "\n")
    return lst, {"empty_file": 1, "no_video_stream": 1, "missing": 1, "bad_label": 1}


def test_bad_files_are_skipped_counted_and_training_goes_on(tmp_path):
    lst, expected = build_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    cfg = load_config("tiny-synthetic", [
        f"data.train={lst}", f"data.val={lst}", "data.frames=8", "data.size=32", "data.workers=0",
        "model.patch=8", "optim.batch_size=4", "train.steps=8", f"train.out={out}", "train.probe=false",
        "data.max_bad_fraction=0.9", "data.num_classes=4"])
    summary = run_pretrain(cfg)
    assert summary["steps"] == 8 and summary["stopped_by"] is None
    counts = summary["bad_by_reason"]
    # 8 steps x 4 = 32 draws over a 19-sample list: every bad file is drawn at least once
    for reason, n in expected.items():
        assert counts.get(reason, 0) >= n, (reason, counts)
    assert counts.get("not_video", 0) + counts.get("decode_error", 0) >= 2, counts  # text + truncated
    assert summary["bad_files"] == 6  # the usable odd files were never counted as bad
    assert summary["malformed_lines"] == 2


def test_too_much_bad_data_stops_with_a_clear_message(tmp_path):
    from mvm.train.guard import TooMuchBadData

    root = tmp_path / "mostly_bad"
    root.mkdir()
    encode_video(root / "good.mp4", _frames(16, 32, 32))
    lines = ["good.mp4 0"] + [f"missing{i}.mp4 0" for i in range(9)]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    cfg = load_config("tiny-synthetic", [
        f"data.train={root / 'list.txt'}", "data.frames=8", "data.size=32", "data.workers=0",
        "model.patch=8", "optim.batch_size=4", "train.steps=50", f"train.out={tmp_path / 'run'}",
        "train.probe=false", "data.max_bad_fraction=0.2"])
    with pytest.raises(TooMuchBadData, match="missing"):
        run_pretrain(cfg)

"""``mvm prepare``: the shared list parser, unique output names, a list pretraining reads back, exit codes."""

from __future__ import annotations

import numpy as np
import pytest

from mvm.cli import main
from mvm.config import DataConfig
from mvm.data.datasets import VideoDataset
from mvm.data.video_io import decode_video, encode_video
from mvm.grid import TokenGrid


@pytest.fixture()
def src(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "src"
    (d / "sub dir").mkdir(parents=True)
    encode_video(d / "sub dir" / "clip.mp4", rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8))
    encode_video(d / "sub dir" / "clip.avi", rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8), codec="mpeg4")
    encode_video(d / "long.mp4", rng.integers(0, 255, (30, 32, 32, 3), dtype=np.uint8))
    return d


def test_unique_names_spaces_and_a_list_pretraining_reads_back(src, tmp_path, capsys):
    lst = src / "train.csv"
    lst.write_text("path,label\nsub dir/clip.mp4,0\nsub dir/clip.avi,1\nsub dir/clip.avi,2\n")  # comma list
    out = tmp_path / "out"
    assert main(["prepare", str(lst), str(out), "--gop", "4"]) == 0
    lines = (out / "train.csv").read_text().splitlines()
    assert lines == ["sub dir/clip.mp4.mp4 0", "sub dir/clip.avi.mp4 1", "sub dir/clip.avi.mp4 2"]
    assert decode_video(out / "sub dir" / "clip.avi.mp4").num_frames == 10
    cfg = DataConfig(frames=4, stride=2, size=32, motion="none", workers=0)
    ds = VideoDataset(str(out / "train.csv"), TokenGrid.from_clip(4, 32, 2, 16), cfg, train=False)
    assert [e.label for e in ds.entries] == [0, 1, 2] and not ds.malformed_lines
    assert ds[1]["failed"] == [] and ds[1]["label"] == 1
    assert "transcoded 2 of 2" in capsys.readouterr().out


def test_segments_become_clips(src, tmp_path):
    import json

    (src / "d48.json").write_text(json.dumps([{"vid_name": "long", "label": 3, "start_frame": 5, "end_frame": 17}]))
    out = tmp_path / "out"
    assert main(["prepare", str(src / "d48.json"), str(out)]) == 0
    assert (out / "d48.txt").read_text() == "long_5-17.mp4 3\n"
    assert decode_video(out / "long_5-17.mp4").num_frames == 12


def test_exit_codes_when_nothing_is_produced(src, tmp_path, capsys):
    empty = src / "empty.txt"
    empty.write_text("# nothing here\n")
    assert main(["prepare", str(empty), str(tmp_path / "o1")]) == 2
    assert "no videos in" in capsys.readouterr().err and not (tmp_path / "o1").exists()
    bad = src / "bad.txt"
    (src / "text.mp4").write_text("no video\n" * 5)
    bad.write_text("text.mp4 0\nmissing.mp4 1\n")
    assert main(["prepare", str(bad), str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "none of the 2 videos" in err and "no list written" in err and not (tmp_path / "o2").exists()


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("where", ["src", "src/sub dir/new", "file"])
def test_an_out_dir_that_would_damage_the_source_is_refused(src, tmp_path, capsys, where):
    """OUT_DIR = the source folder, inside it, or a file: one line, exit 2, nothing written (before:
    transcodes landed beside the originals and joined the data set; a file gave a traceback)."""
    (tmp_path / "file").write_text("x\n")
    before = _tree(tmp_path)
    assert main(["prepare", str(src), str(tmp_path / where)]) == 2
    err = capsys.readouterr().err.strip()
    expected = "is a file" if where == "file" else "is inside the source folder"
    assert err.startswith("mvm prepare: OUT_DIR") and expected in err and "\n" not in err
    assert _tree(tmp_path) == before


def test_an_output_that_is_its_own_input_is_refused(src, capsys):
    """A list whose folder is OUT_DIR, with another list name: `long.mp4` would be transcoded onto itself."""
    lst = src / "all.txt"
    lst.write_text("long.mp4 0\n")
    before = _tree(src)
    assert main(["prepare", str(lst), str(src), "--list-name", "new.txt"]) == 2
    assert "long.mp4 would replace its own input video" in capsys.readouterr().err
    assert _tree(src) == before


def test_bframes_layout_lets_a_strided_clip_skip_the_frames_it_does_not_show(src, tmp_path, monkeypatch):
    import mvm.data.video_io as video_io

    lst = src / "one.txt"
    lst.write_text("long.mp4 0\n")
    outs = {n: tmp_path / f"b{n}" for n in (0, 3)}
    for n, out in outs.items():
        assert main(["prepare", str(lst), str(out), "--gop", "16", "--bframes", str(n)]) == 0
    types = "".join(decode_video(outs[3] / "long.mp4").pict_types)
    assert types.startswith("IBBBPBBBPBBBP") and "".join(decode_video(outs[0] / "long.mp4").pict_types).count("B") == 0
    decoded = []  # frames the decoder put out for one item (skipped non-reference frames never come out)
    real = video_io._decoded
    monkeypatch.setattr(video_io, "_decoded", lambda *a, **k: (decoded.append(f) or f for f in real(*a, **k)))
    grid = TokenGrid.from_clip(4, 32, 2, 16)
    cfg = DataConfig(frames=4, stride=4, size=32, motion="none", workers=0, cache_mb=0)
    counts = {}
    for n, out in outs.items():
        decoded.clear()
        item = VideoDataset(str(out / "one.txt"), grid, cfg, train=False)[0]
        assert item["failed"] == [] and item["video"].shape == (3, 4, 32, 32)
        counts[n] = len(decoded)
    assert counts[3] < counts[0], counts  # the unshown B-frames were skipped, not decoded
    assert main(["prepare", str(lst), str(tmp_path / "bad"), "--bframes", "16"]) == 2

"""``mvm data check``: a tiny fixture in every annotation format, with real videos, counted right."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvm.cli import main
from mvm.data.video_io import encode_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A 12-frame clip, a 40-frame video (for segments) and a 12-image frame folder."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    encode_video(root / "short.mp4", rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8))
    encode_video(root / "long.mp4", rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), gop=8)
    (root / "frames").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "frames" / f"img_{i + 1:05d}.jpg")
    return {"short": root / "short.mp4", "long": root / "long.mp4", "frames": root / "frames"}


def _put(clips: dict[str, Path], kind: str, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if kind == "frames" else shutil.copy)(clips[kind], dst)


def _check(capsys, *args: str) -> tuple[int, dict]:
    rc = main(["data", "check", *args, "--json", "--frames", "4", "--stride", "2"])
    return rc, json.loads(capsys.readouterr().out)


def test_videomae_list_with_spaces_segment_frames_missing_and_bad_label(tmp_path, clips, capsys):
    _put(clips, "short", tmp_path / "playing guitar" / "my clip.mp4")
    _put(clips, "frames", tmp_path / "frames_a")
    _put(clips, "short", tmp_path / "b.mp4")
    (tmp_path / "text.mp4").write_text("not a video\n" * 10)
    lst = tmp_path / "train.txt"
    lst.write_text("playing guitar/my clip.mp4 0\nframes_a 1\nb.mp4 9\nmissing.mp4 1\ntext.mp4 0\nb.mp4 x\n")
    rc, report = _check(capsys, str(lst), "--num-classes", "3")
    assert rc == 1 and report["total"] == 6 and report["usable"] == 2
    assert report["bad_by_reason"] == {"bad_label": 1, "missing": 1, "not_video": 1, "malformed_line": 1}
    assert "missing.mp4" in report["examples"]["missing"][0]
    lst.write_text("playing guitar/my clip.mp4 0\nframes_a 1\n")
    assert _check(capsys, str(lst))[0] == 0


def test_folder_tree(tmp_path, clips, capsys):
    _put(clips, "short", tmp_path / "ant" / "a.mp4")
    _put(clips, "short", tmp_path / "big cat" / "b.mp4")
    (tmp_path / "big cat" / "c.mp4").write_bytes(b"")
    rc, report = _check(capsys, str(tmp_path))
    assert rc == 1 and report["format"] == "folder" and report["total"] == 3
    assert report["bad_by_reason"] == {"empty_file": 1}


def test_ucf101_and_hmdb51_splits(tmp_path, clips, capsys):
    ucf = tmp_path / "ucf"
    (ucf / "lists").mkdir(parents=True)
    (ucf / "lists" / "classInd.txt").write_text("1 Archery\n2 Bowling\n")
    (ucf / "lists" / "trainlist01.txt").write_text("Archery/v_a.avi 1\nBowling/v_b.avi 2\nBowling/v_gone.avi 2\n")
    _put(clips, "short", ucf / "videos" / "Archery" / "v_a.avi")
    _put(clips, "short", ucf / "videos" / "Bowling" / "v_b.avi")
    rc, report = _check(capsys, str(ucf / "lists" / "trainlist01.txt"), "--root", str(ucf / "videos"))
    assert rc == 1 and report["format"] == "ucf101" and report["bad_by_reason"] == {"missing": 1}
    hm = tmp_path / "hmdb"
    (hm / "splits").mkdir(parents=True)
    (hm / "splits" / "jump_test_split1.txt").write_text("a.avi 1\nb.avi 2\n")
    (hm / "splits" / "run_test_split1.txt").write_text("c.avi 2\nd.avi 1\n")
    for cls, name in (("jump", "a.avi"), ("jump", "b.avi"), ("run", "c.avi")):
        _put(clips, "short", hm / "videos" / cls / name)
    rc, report = _check(capsys, str(hm / "splits"), "--root", str(hm / "videos"), "--subset", "test")
    assert rc == 0 and report["format"] == "hmdb51" and report["total"] == 2
    rc, report = _check(capsys, str(hm / "splits"), "--root", str(hm / "videos"))
    assert rc == 1 and report["bad_by_reason"] == {"missing": 1}  # train: run/d.avi is missing


def test_kinetics_ssv2_diving48_epic100(tmp_path, clips, capsys):
    k = tmp_path / "k400"
    k.mkdir()
    (k / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nplaying guitar,abc,10,20,val\n"
                               "abseiling,gone,0,10,val\n")
    _put(clips, "short", k / "playing guitar" / "abc_000010_000020.mp4")
    rc, report = _check(capsys, str(k / "val.csv"))
    assert report["format"] == "kinetics" and report["bad_by_reason"] == {"missing": 1} and rc == 1

    s = tmp_path / "ssv2"
    s.mkdir()
    (s / "labels.json").write_text(json.dumps({"Pushing something": "0"}))
    (s / "validation.json").write_text(json.dumps([{"id": "1", "template": "Pushing [something]"},
                                                   {"id": "2", "template": "Pushing [something]"}]))
    _put(clips, "short", s / "1.webm")
    (s / "2.webm").write_text("garbage")
    rc, report = _check(capsys, str(s / "validation.json"))
    assert report["format"] == "ssv2" and report["bad_by_reason"] == {"not_video": 1}

    d = tmp_path / "d48"
    _put(clips, "long", d / "rgb" / "dive.mp4")
    (d / "test.json").write_text(json.dumps([
        {"vid_name": "dive", "label": 0, "start_frame": 20, "end_frame": 30},  # a segment of a longer video
        {"vid_name": "dive", "label": 1, "start_frame": 38, "end_frame": 40},  # too short for a 7-frame clip
        {"vid_name": "dive", "label": 1, "start_frame": 50, "end_frame": 60}]))  # past the end
    rc, report = _check(capsys, str(d / "test.json"))
    assert report["format"] == "diving48" and report["bad_by_reason"] == {"empty_span": 1} and report["short"] == 1

    e = tmp_path / "epic"
    _put(clips, "long", e / "P01" / "videos" / "P01_01.MP4")
    _put(clips, "frames", e / "P02" / "rgb_frames" / "P02_01")
    (e / "EPIC_100_validation.csv").write_text(
        "narration_id,participant_id,video_id,start_frame,stop_frame,verb,verb_class,noun_class\n"
        "a,P01,P01_01,11,30,take,0,1\nb,P02,P02_01,1,12,put,1,1\nc,P03,P03_01,1,12,put,1,1\n"
        "d,P01,P01_01,1,12,open,7,1\n")
    rc, report = _check(capsys, str(e / "EPIC_100_validation.csv"), "--num-classes", "5")
    assert report["format"] == "epic100" and report["total"] == 4
    assert report["bad_by_reason"] == {"missing": 1, "bad_label": 1} and rc == 1


def test_unopenable_source_exits_2_with_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.txt: no such list file or folder" in err


def test_clips_shorter_than_a_clip_are_usable(tmp_path, clips, capsys):
    """Training pads a short video with its last frame, so it is usable and counted apart (before:
    12-frame clips at the default 16 x 4 gave "0 usable", exit 1, as if the data set were broken)."""
    _put(clips, "short", tmp_path / "a" / "x.mp4")
    _put(clips, "short", tmp_path / "b" / "y.mp4")
    assert main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 entries, 2 usable" in out
    assert "2 usable but shorter than one clip (16 frames at stride 4): training repeats their last frame" in out

"""Annotation formats: each parser's entries, labels, spans and classes; detection; source errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvm.data.formats import FORMATS, DataSourceError, Entry, detect_format, open_source, parse_format


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_format_is_registered():
    assert set(FORMATS) == {"videomae", "folder", "ucf101", "hmdb51", "kinetics", "ssv2", "diving48", "epic100"}


def test_videomae_paths_with_spaces_and_root(tmp_path):
    lst = _write(tmp_path / "l" / "train.txt", "playing guitar/a b.mp4 3\nx.mp4,1\nonly path.mp4\n")
    src = open_source(lst)
    assert src.format == "videomae" and [e.label for e in src.entries] == [3, 1, -1]
    assert src.entries[0].path == str(tmp_path / "l" / "playing guitar" / "a b.mp4")
    assert open_source(lst, root=str(tmp_path)).entries[1].path == str(tmp_path / "x.mp4")


def test_ucf101_labels_from_classind(tmp_path):
    _write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 Archery\n")
    train = _write(tmp_path / "trainlist01.txt", "Archery/v_Archery_g01_c01.avi 2\nApplyEyeMakeup/v_A_g01_c01.avi 1\n")
    test = _write(tmp_path / "testlist01.txt", "Archery/v_Archery_g07_c01.avi\nNope/v.avi\n")
    src = open_source(train, root="")
    assert detect_format(train) == "ucf101" and src.classes == ["ApplyEyeMakeup", "Archery"]
    assert [e.label for e in src.entries] == [1, 0]
    t = open_source(test)
    assert [e.label for e in t.entries] == [1] and len(t.malformed) == 1 and "testlist01.txt:2" in t.malformed[0]


def test_hmdb51_split_and_subset(tmp_path):
    _write(tmp_path / "splits" / "brush_hair_test_split1.txt", "a.avi 1\nb.avi 2\nc.avi 0\n")
    _write(tmp_path / "splits" / "cartwheel_test_split1.txt", "d.avi 2\n")
    _write(tmp_path / "splits" / "cartwheel_test_split2.txt", "d.avi 1\n")
    videos = tmp_path / "videos"
    videos.mkdir()
    train = open_source(tmp_path / "splits", root=str(videos))
    assert train.format == "hmdb51" and train.classes == ["brush_hair", "cartwheel"]
    assert train.entries == [Entry(str(videos / "brush_hair" / "a.avi"), 0)]
    test = open_source(tmp_path / "splits", "hmdb51:subset=test")
    assert [(Path(e.path).name, e.label) for e in test.entries] == [("b.avi", 0), ("d.avi", 1)]
    assert len(open_source(tmp_path / "splits", subset="train", split=2).entries) == 1
    with pytest.raises(DataSourceError, match="split3"):
        open_source(tmp_path / "splits", split=3)


def test_kinetics_csv_class_folders_and_flat(tmp_path):
    csv = _write(tmp_path / "k400" / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                 "playing guitar,abc,10,20,train\nabseiling,xyz,0,10,train\n")
    _write(tmp_path / "k400" / "xyz_000000_000010.mp4", "")  # flat layout wins when it exists
    src = open_source(csv)
    assert src.format == "kinetics" and src.classes == ["abseiling", "playing guitar"]
    assert src.entries[0] == Entry(str(tmp_path / "k400" / "playing guitar" / "abc_000010_000020.mp4"), 1)
    assert src.entries[1] == Entry(str(tmp_path / "k400" / "xyz_000000_000010.mp4"), 0)


def test_ssv2_templates_without_brackets(tmp_path):
    _write(tmp_path / "something-something-v2-labels.json", json.dumps({"Pushing something": "1", "Holding something": "0"}))
    ann = _write(tmp_path / "train.json", json.dumps([{"id": "7", "template": "Pushing [something]"},
                                                      {"id": "8", "template": "Holding [something]"},
                                                      {"id": "9", "template": "Dancing [badly]"}]))
    src = open_source(ann, root=str(tmp_path))
    assert src.format == "ssv2" and src.classes == ["Holding something", "Pushing something"]
    assert src.entries == [Entry(str(tmp_path / "7.webm"), 1), Entry(str(tmp_path / "8.webm"), 0)]
    assert len(src.malformed) == 1


def test_diving48_and_epic100_spans(tmp_path):
    d = _write(tmp_path / "d48.json", json.dumps([{"vid_name": "v1", "label": 4, "start_frame": 3, "end_frame": 30}]))
    assert open_source(d).entries == [Entry(str(tmp_path / "rgb" / "v1.mp4"), 4, 3, 30)]
    e = _write(tmp_path / "epic.csv", "narration_id,participant_id,video_id,start_frame,stop_frame,verb,verb_class,"
               "noun_class\nP01_01_0,P01,P01_01,11,40,take,1,3\nP01_01_1,P01,P01_01,x,40,put,0,3\n")
    src = open_source(e)
    assert src.format == "epic100" and src.classes == ["0", "take"]
    assert src.entries == [Entry(str(tmp_path / "P01" / "videos" / "P01_01.MP4"), 1, 10, 40)]
    assert len(src.malformed) == 1


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "nowhere.txt", "no such list file or folder"),
    (lambda p: p, "the folder is empty"),
    (lambda p: _write(p / "notes.txt", "hello").parent, "none a video"),
    (lambda p: _write(p / "empty.txt", "# nothing\n"), "no videos in"),
    (lambda p: _write(p / "bad.txt", "a b c\n"), "no usable lines"),
    (lambda p: Path(f"{_write(p / 'a.csv', 'x.mp4 1')},{p}"), "several sources joined by commas"),
    (lambda p: _write(p / "bin.txt", "").parent / "bin.txt", "no videos"),
])
def test_sources_that_cannot_be_used_say_why(tmp_path, make, message):
    with pytest.raises(DataSourceError, match=message):
        open_source(make(tmp_path))


def test_format_errors(tmp_path):
    lst = _write(tmp_path / "l.txt", "a.mp4 1\n")
    with pytest.raises(DataSourceError, match="unknown data format 'nope'"):
        open_source(lst, "nope")
    with pytest.raises(DataSourceError, match="does not read"):
        open_source(tmp_path, "kinetics")
    with pytest.raises(DataSourceError, match="classInd"):
        open_source(lst, "ucf101")
    with pytest.raises(DataSourceError, match="key=value"):
        parse_format("hmdb51:test")
    assert parse_format("HMDB51:split=2, subset=test") == ("hmdb51", {"split": "2", "subset": "test"})
    (tmp_path / "latin.txt").write_bytes(b"\xff\xfe\x00a 1\n")
    with pytest.raises(DataSourceError, match="latin.txt"):
        open_source(tmp_path / "latin.txt")

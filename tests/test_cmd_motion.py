"""`mvm motion` and `mvm prepare` through the command line, bad input included."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from test_motion_codec import FRAMES, moving_square

from mvm import cli
from mvm.data.video_io import decode_video, encode_video


@pytest.fixture(autouse=True)
def only_motion_commands(monkeypatch):
    """Build the parser from the commands under test only (the others are tested elsewhere)."""
    monkeypatch.setattr(cli, "COMMANDS", ["motion", "prepare"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    frames, _ = moving_square((3, 0))
    encode_video(root / "right.mp4", frames, bframes=2, refs=3)
    encode_video(root / "right.avi", frames, codec="mjpeg")
    encode_video(root / "down.webm", moving_square((0, 2))[0], codec="libvpx-vp9")
    good = (root / "right.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (root / "text.mp4").write_text("not a video\n" * 20)
    with av.open(str(root / "audio.wav"), "w") as out:
        s = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in [*s.encode(frame), *s.encode()]:
            out.mux(p)
    return root


def test_motion_writes_picture_arrays_and_summary(clips, tmp_path, capsys):
    png, npz = tmp_path / "m.png", tmp_path / "m.npz"
    assert cli.main(["motion", str(clips / "right.mp4"), "--out", str(png), "--npz", str(npz), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == FRAMES and summary["codec"] == "h264" and summary["motion_source"] == "codec"
    assert 0 < summary["mean_magnitude"] < 3
    assert png.stat().st_size > 5000
    data = np.load(npz)
    assert data["dx"].shape == data["dy"].shape == (FRAMES, 16, 16) and data["dx"].dtype == np.float32
    assert data["valid"].dtype == bool and data["valid"].shape == (FRAMES,)
    assert int(data["block"]) == 4 and str(data["source"]) == "codec" and str(data["codec"]) == "h264"
    assert np.percentile(data["dx"][data["valid"]], 99) > 2  # the square moves right


@pytest.mark.parametrize("name", ["right.avi", "down.webm"])
def test_motion_falls_back_to_estimation(clips, capsys, name):
    assert cli.main(["motion", str(clips / name), "--json", "--block", "8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["motion_source"] == "estimated" and summary["grid"] == [8, 8]


def test_motion_bad_input_gives_a_message_naming_the_file(clips, capsys, tmp_path):
    """Bad input is the user's: one line naming the file, exit code 2, nothing written."""
    png, npz = tmp_path / "m.png", tmp_path / "m.npz"
    outs = ["--out", str(png), "--npz", str(npz)]
    assert cli.main(["motion", str(clips / "right.avi"), "--source", "codec", *outs]) == 2
    err = capsys.readouterr().err
    assert "right.avi: no_motion_vectors: mjpeg streams carry no motion vectors" in err and "'estimate'" in err
    for name, reason in [("audio.wav", "no_video_stream"), ("text.mp4", "not_video"), ("nope.mp4", "missing")]:
        assert cli.main(["motion", str(clips / name), *outs]) == 2
        err = capsys.readouterr().err
        assert name in err and reason in err and "Errno" not in err
    assert cli.main(["motion", str(clips / "truncated.mp4"), "--json"]) in (0, 2)  # partial or clear error
    assert cli.main(["motion", str(clips / "right.mp4"), "--block", "0", *outs]) == 2
    assert cli.main(["motion", str(clips / "right.mp4"), "--max-frames", "1", *outs]) == 2
    assert "--max-frames must be >= 2" in capsys.readouterr().err
    assert not png.exists() and not npz.exists()


def test_motion_npz_into_a_new_folder(clips, tmp_path):
    """--npz creates its folder, as --out does (before: a FileNotFoundError traceback)."""
    npz = tmp_path / "new" / "m.npz"
    assert cli.main(["motion", str(clips / "right.mp4"), "--npz", str(npz), "--max-frames", "4"]) == 0
    assert set(np.load(npz).files) >= {"dx", "dy", "valid"}


def test_prepare_transcodes_keeps_labels_and_reports_bad_files(clips, tmp_path, capsys):
    lst = clips / "train.txt"
    lst.write_text("right.avi 3\ndown.webm 1\ntext.mp4 2\nmissing.mp4 0\naudio.wav 1\nbroken line\n")
    out = tmp_path / "prepared"
    assert cli.main(["prepare", str(lst), str(out), "--gop", "8", "--crf", "20"]) == 0
    captured = capsys.readouterr()
    assert (out / "train.txt").read_text().splitlines() == ["right.mp4 3", "down.mp4 1"]
    for name in ("text.mp4", "missing.mp4", "audio.wav", "train.txt:6"):
        assert name in captured.err
    video = decode_video(out / "right.mp4", with_motion=True)
    assert video.codec == "h264" and video.num_frames == FRAMES and video.has_vectors
    assert "B" not in video.pict_types and video.pict_types[8] == "I"  # gop 8, no B-frames
    mv = np.concatenate([m for m in video.motion_vectors if m is not None])
    assert (mv["source"] == -1).all()


def test_prepare_folder_and_refusals(clips, tmp_path, capsys):
    folder = tmp_path / "src"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (folder / "a" / "x.avi").write_bytes((clips / "right.avi").read_bytes())
    (folder / "b" / "y.webm").write_bytes((clips / "down.webm").read_bytes())
    assert cli.main(["prepare", str(folder), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "list.txt").read_text().splitlines() == ["a/x.mp4 0", "b/y.mp4 1"]
    assert cli.main(["prepare", str(tmp_path / "nothing"), str(tmp_path / "o2")]) == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("text.mp4 0\n")
    assert cli.main(["prepare", str(bad), str(tmp_path / "o3")]) == 1  # nothing usable
    assert cli.main(["prepare", str(bad), str(tmp_path)]) == 2  # would overwrite its own list
    capsys.readouterr()


def test_motion_of_intra_only_h264_blames_the_frames_not_the_codec(tmp_path, capsys):
    """H.264 with a keyframe every frame has no vectors: the message says the frames read are
    I-frames (before: "h264 streams carry no motion vectors", untrue of the codec)."""
    encode_video(tmp_path / "intra.mp4", moving_square((3, 0))[0][:6], gop=1)
    assert cli.main(["motion", str(tmp_path / "intra.mp4"), "--source", "codec"]) == 2
    err = capsys.readouterr().err
    assert "the 6 h264 frame(s) read carry no motion vectors (pict types IIIIII" in err

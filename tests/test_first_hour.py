"""A new user's first hour, through the CLI in subprocesses: bad input is one line naming the file
or key with exit code 2 and nothing written; --resume continues the run as it was configured; a
broken validation video does not lose the run's summary.

Real H.264 files written with mvm.data.video_io.encode_video (tiny, so each run takes seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvm.data.video_io import encode_video

SRC = str(Path(__file__).resolve().parents[1] / "src")
#: A tokenizer run small enough for seconds on a CPU.
TOK_SETS = ["data.size=32", "data.frames=4", "data.workers=0", "data.cache_mb=0", "optim.batch_size=2",
            "optim.warmup_steps=1", "train.log_every=1", "tokenizer.eval_clips=2"]


def mvm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``mvm ARGS`` in ``cwd``, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "mvm.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def sets(*pairs: str) -> list[str]:
    return [x for p in pairs for x in ("--set", p)]


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    """``clips/a.mp4``, ``clips/my clip.mp4`` (H.264, 12 frames of 48x40), ``clips/text.mp4`` (a text
    file), ``list.txt`` of the two good clips and ``val.txt`` that also names the text file."""
    root = tmp_path_factory.mktemp("footage")
    (root / "clips").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "my clip.mp4"):
        base = rng.integers(0, 255, (40, 64, 3), dtype=np.uint8)
        frames = np.stack([np.roll(base, 2 * t, axis=1)[:, :48] for t in range(12)])  # a pan to the left
        encode_video(root / "clips" / name, frames)
    (root / "clips" / "text.mp4").write_text("not a video\n")
    (root / "list.txt").write_text("clips/a.mp4 0\nclips/my clip.mp4 1\n")
    (root / "val.txt").write_text("clips/text.mp4 0\nclips/a.mp4 0\nclips/my clip.mp4 1\n")
    return root


def test_tokenizer_resume_continues_the_runs_config(footage, tmp_path):
    """A run on the user's list at 32 px, 4 frames; `--resume --steps 2` alone continues it as it was
    (before: the default preset's synthetic set at 8 frames, refused on data.size)."""
    r = mvm("tokenizer", "train", "--data", str(footage / "list.txt"), "--val", str(footage / "val.txt"),
            "--out", "runs/tok", "--steps", "1", *sets(*TOK_SETS), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "config      tokenizer-tiny" in r.stderr and "4 frames" in r.stderr  # the run's key values, first
    summary = json.loads((tmp_path / "runs/tok/summary.json").read_text())
    # the text file in --val is skipped with a warning, the other clips validate, the summary is written
    assert "psnr_topk" in summary and "text.mp4" in r.stderr
    r = mvm("tokenizer", "train", "--out", "runs/tok", "--resume", "--steps", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "runs/tok/config.toml (resumed)" in r.stderr
    summary = json.loads((tmp_path / "runs/tok/summary.json").read_text())
    assert summary["steps"] == 2
    saved = (tmp_path / "runs/tok/config.toml").read_text()
    assert "list.txt" in saved and "frames = 4" in saved
    assert not (tmp_path / ".cache").exists()  # the synthetic set was never made


def test_tokenizer_resume_with_nothing_to_resume_is_refused(tmp_path):
    r = mvm("tokenizer", "train", "--out", "runs/none", "--resume", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith(
        "--resume: runs/none holds no checkpoint to resume from (start a new run without --resume, "
        "or name the run folder with --out)")
    assert "Traceback" not in r.stderr and not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["list.txt", "--clips", "2"], "mvm synth: list.txt is a file; OUT_DIR must be a folder (created if absent)"),
    (["out", "--clips", "2", "--gop", "0"], "mvm synth: need gop >= 1, bframes >= 0, refs >= 1; got gop=0"),
])
def test_synth_refuses_a_file_or_a_bad_gop_before_writing(tmp_path, monkeypatch, capsys, args, message):
    """Before: a NotADirectoryError traceback for a file; --gop 0 went to x264 unchecked."""
    from mvm.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    assert main(["synth", *args]) == 2
    assert capsys.readouterr().err.strip().startswith(message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.txt"]


def test_out_names_the_file_really_written(footage, tmp_path, capsys):
    """`--out FOLDER` puts the picture inside it and a name without a suffix gets .png (before:
    `--out pics` wrote pics.png and printed "pics"; an existing folder became FOLDER.png)."""
    from mvm.cli import main

    video = str(footage / "clips" / "a.mp4")
    (tmp_path / "pics").mkdir()
    assert main(["motion", video, "--out", str(tmp_path / "pics"), "--npz", str(tmp_path / "field")]) == 0
    out = capsys.readouterr().out
    assert f"picture: {tmp_path / 'pics' / 'a.mp4.motion.png'}" in out and f"npz: {tmp_path / 'field.npz'}" in out
    assert main(["masks", video, "--out", str(tmp_path / "m"), "--size", "32", "--frames", "4"]) == 0
    assert f"picture: {tmp_path / 'm.png'}" in capsys.readouterr().out
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "field.npz", "m.png", "pics", "pics/a.mp4.motion.png"]

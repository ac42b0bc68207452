"""`mvm pretrain` as a user meets it: data errors before anything is written, a resume that
remembers its run, the preset chosen for real footage, a probe that cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--set", "data.frames=4", "--set", "data.size=32", "--set", "model.patch=8", "--set", "data.workers=0",
        "--set", "optim.batch_size=2", "--set", "optim.warmup_steps=1", "--set", "train.log_every=1",
        "--set", "train.ckpt_every=2", "--set", "data.stride=1"]


def mvm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mvm.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    from mvm.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("clips")
    make_synthetic(root, clips=8, val_clips=4, frames=8, size=32, seed=0)
    return root


def _bad_sources(tmp: Path) -> dict[str, tuple[str, str]]:
    (tmp / "empty").mkdir()
    (tmp / "textonly").mkdir()
    (tmp / "textonly" / "clip.mp4").write_text("this is not a video\n")
    (tmp / "a.csv").write_text("x.mp4 0\n")
    return {
        "missing list": (str(tmp / "nonexistent" / "x.txt"), "no such list file or folder"),
        "empty folder": (str(tmp / "empty"), "no videos"),
        "renamed text file": (str(tmp / "textonly"), "can be read"),
        "two sources": (f"{tmp / 'a.csv'},{tmp / 'empty'}", "several sources"),
    }


@pytest.mark.parametrize("case", ["missing list", "empty folder", "renamed text file", "two sources"])
def test_bad_data_source_is_one_line_rc2_and_writes_nothing(tmp_path, case):
    source, words = _bad_sources(tmp_path)[case]
    r = mvm("pretrain", "--data", source, "--out", str(tmp_path / "run"), *TINY, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("mvm pretrain: data error:")]
    assert len(error) == 1 and words in error[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_bad_val_source_is_refused_before_training(tmp_path, clips):
    r = mvm("pretrain", "--data", str(clips / "train.csv"), "--val", str(tmp_path / "nope"),
            "--out", str(tmp_path / "run"), *TINY, cwd=tmp_path)
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_val_folder_without_classes_skips_the_probe_and_writes_the_summary(tmp_path, clips):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(clips.glob("val/*.mp4"))[:3] or sorted(clips.rglob("*.mp4"))[:3]:
        (flat / f.name).write_bytes(f.read_bytes())
    r = mvm("pretrain", "--config", "tiny-synthetic", "--data", str(clips / "train.csv"), "--val", str(flat),
            "--out", str(tmp_path / "run"), "--steps", "2", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "no label" in summary["probe_skipped"] and "knn_top1" not in summary
    assert "probe skipped" in r.stdout


def test_resume_without_checkpoint_says_so_and_starts_nothing(tmp_path):
    r = mvm("pretrain", "--out", str(tmp_path / "never"), "--resume", cwd=tmp_path)
    assert r.returncode == 2 and "holds no checkpoint" in r.stderr
    assert not (tmp_path / "never").exists()


def test_resume_continues_the_run_as_it_was_configured(tmp_path, clips):
    out = tmp_path / "run"
    first = mvm("pretrain", "--config", "tiny-synthetic", "--data", str(clips / "train.csv"), "--out", str(out),
                "--steps", "2", "--set", "train.probe=false", *TINY, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # Only the run folder and a new step count: data, model and sizes come from its config.toml.
    again = mvm("pretrain", "--out", str(out), "--resume", "--steps", "4", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4
    assert "(resumed)" in again.stderr and str(clips / "train.csv") in again.stderr
    assert not (tmp_path / ".cache").exists()  # never fell back to the built-in synthetic set


def test_data_without_config_uses_the_footage_preset_and_says_so(tmp_path, clips):
    r = mvm("pretrain", "--data", str(clips / "train.csv"), "--out", str(tmp_path / "run"), "--steps", "1",
            "--set", "train.probe=false", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "config      footage-tiny" in r.stderr
    assert "motion weight" not in r.stderr  # plain VideoMAE on real footage: no codec-motion target
    saved = (tmp_path / "run" / "config.toml").read_text()
    assert "motion_weight = 0.0" in saved and "flip = true" in saved

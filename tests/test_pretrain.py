"""End-to-end pretraining on a tiny synthetic set: the main job, resume exactness, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mvm.config import load_config
from mvm.train.pretrain import run_pretrain

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mvm.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, clips=16, val_clips=8, frames=16, size=32, seed=0)
    return root


def tiny_overrides(synth: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [f"data.train={synth / 'train.csv'}", f"data.val={synth / 'val.csv'}", "data.frames=8",
            "data.size=32", "data.workers=0", "model.patch=8", "optim.batch_size=4", "optim.warmup_steps=2",
            f"train.steps={steps}", f"train.out={out}", "train.log_every=1", "train.ckpt_every=4",
            "train.keep_ckpts=5", *extra]


def final_weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / f"ckpt-{step:07d}" / "model.safetensors"))


def test_main_job_end_to_end(synth, tmp_path):
    cfg = load_config("tiny-synthetic", tiny_overrides(synth, tmp_path / "run", 6))
    summary = run_pretrain(cfg)
    assert summary["steps"] == 6 and summary["stopped_by"] is None
    assert 0.0 <= summary["knn_top1"] <= 1.0 and 0.0 <= summary["knn_top1_random"] <= 1.0
    for name in ("loss_curve.png", "reconstructions.png", "motion_head.png", "probe_confusion.png", "metrics.jsonl",
                 "summary.json", "config.toml"):
        assert (tmp_path / "run" / name).is_file(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    # the preset trains the codec-motion head: both terms are logged and sum to the loss
    last = json.loads(lines[-1])
    assert last["loss"] == pytest.approx(last["recon_loss"] + last["motion_loss"], rel=1e-5)
    assert summary["motion_loss"] > 0
    assert (tmp_path / "run" / "tb").is_dir()
    # a second run into the same folder without --resume is refused, nothing is overwritten
    with pytest.raises(Exception, match="--resume"):
        run_pretrain(load_config("tiny-synthetic", tiny_overrides(synth, tmp_path / "run", 6)))


def test_nan_loss_step_is_skipped_and_counted(synth, tmp_path):
    cfg = load_config("tiny-synthetic", tiny_overrides(synth, tmp_path / "nan", 5, "train.probe=false"))

    def hook(step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step == 2 else loss

    summary = run_pretrain(cfg, loss_hook=hook)
    assert summary["steps"] == 5 and summary["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in final_weights(tmp_path / "nan", 5).values())


def test_repeated_nan_stops_and_keeps_last_checkpoint(synth, tmp_path):
    from mvm.train.guard import TooManyNonFinite

    cfg = load_config("tiny-synthetic", tiny_overrides(synth, tmp_path / "nan2", 12, "train.max_nonfinite=3"))
    with pytest.raises(TooManyNonFinite, match="step 7"):
        run_pretrain(cfg, loss_hook=lambda s, loss: loss * float("nan") if s >= 5 else loss)
    assert (tmp_path / "nan2" / "ckpt-0000004").is_dir()


def _cli(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "mvm.cli", "pretrain", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_args(synth: Path, out: Path, steps: int, *extra: str) -> list[str]:
    args = ["--config", "tiny-synthetic", "--set", "train.probe=false"]
    for o in tiny_overrides(synth, out, steps, *extra):
        args += ["--set", o]
    return args


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference_run(synth, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "run"
    p = _cli(_cli_args(synth, out, 12))
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return final_weights(out, 12)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigkill_mid_run_then_resume_matches_uninterrupted(synth, tmp_path, reference_run):
    out = tmp_path / "killed"
    p = _cli(_cli_args(synth, out, 12))
    _wait_for(out / "ckpt-0000004" / "meta.json", p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    p = _cli(_cli_args(synth, out, 12) + ["--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    _assert_same(final_weights(out, 12), reference_run)


def test_kill_during_checkpoint_write_then_resume(synth, tmp_path, reference_run):
    out = tmp_path / "killed_in_write"
    p = _cli(_cli_args(synth, out, 12), {"MVM_FAULT_KILL_IN_CHECKPOINT": "8"})
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    assert not (out / "ckpt-0000008").exists() and (out / "ckpt-0000004").is_dir()
    p = _cli(_cli_args(synth, out, 12) + ["--resume"])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    _assert_same(final_weights(out, 12), reference_run)


def test_sigterm_writes_checkpoint_at_the_step_it_stopped(synth, tmp_path):
    out = tmp_path / "term"
    p = _cli(_cli_args(synth, out, 400, "train.ckpt_every=1000"))
    metrics = out / "metrics.jsonl"
    _wait_for(metrics, p)
    p.send_signal(signal.SIGTERM)
    printed, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and 1 <= summary["steps"] < 400
    assert (out / f"ckpt-{summary['steps']:07d}").is_dir()
    assert "mvm pretrain --resume" in printed


def test_sigterm_to_the_process_group_with_loader_workers_still_checkpoints(synth, tmp_path):
    """SLURM's scancel signals every process of the job, loader workers included: the workers must
    not die first and take the run down with a traceback instead of a checkpoint."""
    out = tmp_path / "term_group"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    args = _cli_args(synth, out, 400, "train.ckpt_every=1000", "data.workers=2")
    p = subprocess.Popen([sys.executable, "-m", "mvm.cli", "pretrain", *args], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(out / "metrics.jsonl", p)
    os.killpg(p.pid, signal.SIGTERM)  # the main process and its workers alike
    printed, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "killed by signal" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and 1 <= summary["steps"] < 400
    assert (out / f"ckpt-{summary['steps']:07d}").is_dir()


def test_synthetic_set_is_made_once_and_remade_when_the_config_changes(tmp_path):
    from mvm.train.pretrain import prepare_data_paths

    small = ["synth.clips=8", "synth.val_clips=8", "synth.frames=4", "synth.size=16", "data.workers=0",
             f"data.synth_dir={tmp_path / 'synth'}"]
    cfg = load_config("tiny-synthetic", small)
    prepare_data_paths(cfg)
    assert cfg.data.train.endswith("train.csv") and len(Path(cfg.data.train).read_text().splitlines()) == 8
    stamp = Path(cfg.data.train).stat().st_mtime_ns
    prepare_data_paths(load_config("tiny-synthetic", small))  # same arguments: reused as it is
    assert Path(cfg.data.train).stat().st_mtime_ns == stamp
    again = load_config("tiny-synthetic", [*small, "synth.clips=16"])
    prepare_data_paths(again)
    assert len(Path(again.data.train).read_text().splitlines()) == 16


def test_the_step_makes_no_tensor_from_host_data(synth, tmp_path, host_made):
    """The main job's step (codec-motion target included) builds no tensor from Python data once
    warm: on a GPU each would be a copy to the device inside the step (three a forward came from the
    position tables' constant, each a blocking copy)."""
    from mvm.train.distributed import DistInfo
    from mvm.train.pretrain import PretrainTask

    cfg = load_config("tiny-synthetic", tiny_overrides(synth, tmp_path / "run", 2))
    task = PretrainTask(cfg)
    task.prepare()
    model = task.build_model()
    _, loader = task.build_loader(0, DistInfo())
    batches = iter(loader)
    device = torch.device("cpu")
    task.loss(model, next(batches), device, 0)[0].backward()  # warm: caches filled
    batch = next(batches)
    assert host_made(lambda: task.loss(model, batch, device, 1)[0].backward()) == 0


def test_the_loader_sends_uint8_clips_and_the_step_normalises_them_as_before(synth, tmp_path):
    """The pretraining loader's clips are uint8 (a quarter of the bytes to pin and copy to the
    GPU); the loss of a batch is bit for bit the loss of the same batch normalised beforehand, as
    the loader used to send it."""
    from mvm.data.transforms import normalise_pixels
    from mvm.train.distributed import DistInfo
    from mvm.train.pretrain import PretrainTask

    cfg = load_config("tiny-synthetic", tiny_overrides(synth, tmp_path / "run", 2))
    task = PretrainTask(cfg)
    task.prepare()
    model = task.build_model()
    _, loader = task.build_loader(0, DistInfo())
    batch = next(iter(loader))
    assert batch["video"].dtype == torch.uint8 and batch["video"].dim() == 5
    floats = dict(batch, video=normalise_pixels(batch["video"], cfg.data.mean, cfg.data.std))
    device = torch.device("cpu")
    for b in (batch, floats):  # the same dropout and drop-path draws for both
        torch.manual_seed(0)
        loss, parts = task.loss(model, b, device, 0)
        b["loss"] = (loss, parts)
    assert torch.equal(batch["loss"][0], floats["loss"][0])
    assert parts.keys() == batch["loss"][1].keys()

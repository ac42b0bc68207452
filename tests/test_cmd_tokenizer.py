"""`mvm tokenizer train/score` end to end, resume after SIGKILL, and a 128-frame LVMAE pretraining
step (adaptive decoder mask + token targets) with the trained tokenizer, all on CPU.

Slow-ish (about 30 s here): three short tokenizer runs in subprocesses for the kill/resume check,
as tests/test_pretrain.py does for pretraining.
"""

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

from mvm.cli import main
from mvm.config import ConfigError, load_config

pytestmark = pytest.mark.slow
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from mvm.data.synth import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, clips=8, val_clips=8, frames=16, size=32, seed=0, object_masks=True)
    return root


def _args(synth: Path, out: Path, steps: int) -> list[str]:
    sets = [f"data.train={synth / 'train.csv'}", f"data.val={synth / 'val.csv'}", "data.workers=0",
            "data.cache_mb=0", "optim.batch_size=2", "optim.warmup_steps=1", f"train.steps={steps}",
            "train.log_every=1", "train.ckpt_every=3", "train.keep_ckpts=5", "tokenizer.eval_clips=8"]
    return ["tokenizer", "train", "--out", str(out)] + [x for s in sets for x in ("--set", s)]


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "run"
    assert main(_args(synth, out, 3) + ["--json"]) == 0
    return out


def test_train_reports_psnr_and_object_hits_and_draws_clips(trained):
    s = json.loads((trained / "summary.json").read_text())
    assert s["kind"] == "tokenizer" and s["steps"] == 3
    for key in ("psnr_all", "psnr_topk", "psnr_random"):
        assert 0 < s[key] < 60, key
    assert 0 < s["object_share"] < 0.5 and 0 <= s["topk_object_share"] <= 1
    # places of the frame the budget touches at least once: 10 of 64 tokens reach at most 10 of 16
    assert 0 < s["topk_places"] <= 10 / 16 and 0 < s["random_places"] <= 10 / 16
    # no k tokens hold more object than the k with the most (the ceiling), and that is above the frame's share
    assert s["topk_object_share"] <= s["oracle_object_share"] + 1e-4 and s["oracle_object_ratio"] > 1
    assert len(s["clip_pictures"]) == 4 and all(Path(p).is_file() for p in s["clip_pictures"])
    rows = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert {"topk_mse", "all_mse"} <= set(rows[0])


def test_score_command_json_and_picture(trained, synth, tmp_path, capsys):
    png = tmp_path / "s.png"
    video = synth / "val" / "00003.mp4"
    assert main(["tokenizer", "score", str(video), "--tokenizer", str(trained), "--out", str(png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    n = 4 * 4 * 4  # 8 frames / 2 x (32 / 8)^2
    assert r["grid"] == [4, 4, 4] and len(r["scores"]) == n and len(r["topk"]) == r["k"] == round(0.15 * n)
    assert png.is_file() and png.stat().st_size > 1000
    assert main(["tokenizer", "score", str(video), "--tokenizer", str(tmp_path / "nothing")]) == 2


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "mvm.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_equals_uninterrupted(synth, tmp_path):
    ref = _cli(_args(synth, tmp_path / "ref", 7))
    killed = _cli(_args(synth, tmp_path / "killed", 7))
    t0 = time.time()
    while not (tmp_path / "killed" / "ckpt-0000003" / "meta.json").exists():
        assert killed.poll() is None, killed.communicate()
        assert time.time() - t0 < 240
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    resumed = _cli(_args(synth, tmp_path / "killed", 7) + ["--resume"])
    for p in (ref, resumed):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    a = load_file(str(tmp_path / "ref" / "ckpt-0000007" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "ckpt-0000007" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lvmae_pretraining_step_at_128_frames(trained, tmp_path):
    """Tiny MAE, 128 frames: adaptive decoder mask (15%) from the frozen tokenizer, token targets."""
    from mvm.data.synth import make_synthetic
    from mvm.tokenizer.lvmae import LvmaeTargets
    from mvm.train.pretrain import PretrainTask, run_pretrain

    root = tmp_path / "long"
    make_synthetic(root, clips=2, val_clips=0, frames=128, size=32, seed=1)
    sets = [f"data.train={root / 'train.csv'}", "data.frames=128", "data.stride=1", "data.size=32",
            "data.motion=none", "data.workers=0", "data.cache_mb=0", "model.patch=8", "mask.ratio=0.9",
            "mask.decoder=adaptive", "mask.decoder_ratio=0.15", "train.target=tokens", f"train.tokenizer={trained}",
            "train.motion_weight=0", "train.probe=false", "optim.batch_size=1", "train.steps=1",
            "train.bf16=false", "model.checkpointing=true", "model.recompute_chunks=2", f"train.out={tmp_path / 'pre'}"]
    cfg = load_config("tiny-synthetic", sets)
    task = PretrainTask(cfg)
    model = task.build_model()
    assert model.out_dim == 8 + 5 + 5 + 5  # one small softmax per FSQ level
    assert model.checkpointing and {b.recompute_chunks for b in model.encoder.blocks} == {2}
    _, loader = task.build_loader(0, __import__("mvm.train.distributed", fromlist=["DistInfo"]).DistInfo())
    batch = next(iter(loader))
    tokens = LvmaeTargets(cfg)(batch["video"], batch["encoder_mask"], batch["decoder_mask"])
    # the loader's uint8 clips give the tokens their normalised values give
    from mvm.data.transforms import normalise_pixels

    assert batch["video"].dtype == torch.uint8
    again = LvmaeTargets(cfg)(normalise_pixels(batch["video"], cfg.data.mean, cfg.data.std),
                              batch["encoder_mask"], batch["decoder_mask"])
    assert torch.equal(tokens.digits, again.digits) and torch.equal(tokens.scores, again.scores)
    n = 64 * 4 * 4
    assert tokens.decode_idx.shape == (1, int(0.15 * n)) and tokens.scores.shape == (1, n)
    assert batch["encoder_mask"][0, tokens.decode_idx[0]].all()  # decoded tokens were all masked
    s = run_pretrain(cfg)
    assert s["steps"] == 1 and s["final_loss"] == s["final_loss"] and s["final_loss"] > 0
    # a tokenizer whose grid is not the MAE's is refused, naming the key
    with pytest.raises(ConfigError, match="train.tokenizer"):
        PretrainTask(load_config("tiny-synthetic", sets[:-1] + ["model.patch=16", "data.size=32",
                                                                 f"train.out={tmp_path / 'p2'}"])).check()


def test_a_stem_larger_than_the_patch_is_refused_naming_the_keys():
    from mvm.tokenizer.task import TokenizerTask

    cfg = load_config("tokenizer-tiny", ["tokenizer.size=small", "model.patch=2"])
    with pytest.raises(ConfigError, match="tokenizer.size: a tokenizer stem of 4 px does not fit patch=2"):
        TokenizerTask(cfg).check()

"""The study runner's bookkeeping (benchmarks/ablation.py): grid, resume, aggregation, table, plot.

Fake result rows stand in for runs (a real cell pretrains and fine-tunes for minutes); the runs
themselves are mvm.train.pretrain and ``mvm finetune``, tested on their own.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("ablation", Path(__file__).resolve().parents[1] / "benchmarks/ablation.py")
ablation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ablation)

SETTINGS = {"config": "tiny-synthetic", "overrides": ["train.steps=2"], "finetune_steps": 0}


def fake_row(cell: dict, knn: float, status: str = "ok") -> dict:
    return {**cell, "status": status, "knn_top1": knn, "linear_top1": knn / 2, "knn_top1_random": 0.125,
            "settings": SETTINGS}


def test_grid_is_the_product_of_values_and_seeds():
    vary = ablation.parse_vary(["mask.encoder=random,tube,mgm", "mask.ratio=0.75,0.9"])
    grid = ablation.cells(vary, [0, 1])
    assert len(grid) == 12
    assert grid[0] == {"values": {"mask.encoder": "random", "mask.ratio": "0.75"}, "seed": 0}
    assert ablation.cell_name(grid[-1]) == "mask.encoder=mgm_mask.ratio=0.9_s1"
    assert len({ablation.cell_name(c) for c in grid}) == 12
    for bad in (["mask.encoder"], ["encoder=a,b"], ["mask.ratio=0.9", "mask.ratio=0.75"]):
        with pytest.raises(ValueError):
            ablation.parse_vary(bad)


def test_resume_skips_finished_cells_and_retries_failed_ones(tmp_path):
    grid = ablation.cells(ablation.parse_vary(["mask.encoder=random,tube"]), [0, 1])
    results = tmp_path / "results.jsonl"
    lines = [json.dumps(fake_row(grid[0], 0.3)), json.dumps(fake_row(grid[1], 0.0, status="failed")),
             '{"values": {"mask.enc']  # a line cut short by a kill
    results.write_text("\n".join(lines) + "\n")
    rows = ablation.read_rows(results)
    assert len(rows) == 2
    todo = ablation.pending(grid, rows, SETTINGS)
    assert [ablation.cell_name(c) for c in todo] == [ablation.cell_name(c) for c in grid[1:]]
    with pytest.raises(ValueError, match="another study"):
        ablation.pending(grid, rows, {**SETTINGS, "overrides": ["train.steps=50"]})


def test_aggregate_mean_and_sample_std_over_seeds_and_the_table(tmp_path):
    grid = ablation.cells(ablation.parse_vary(["mask.encoder=random,mgm"]), [0, 1, 2])
    knn = {"random": [0.20, 0.25, 0.30], "mgm": [0.40, 0.30, 0.35]}
    rows = [fake_row(c, knn[c["values"]["mask.encoder"]][c["seed"]]) for c in grid]
    rows.append(fake_row(grid[0], 0.99, status="failed"))  # failed rows never count
    summary = ablation.aggregate(rows, ["mask.encoder"])
    assert [e["values"]["mask.encoder"] for e in summary] == ["random", "mgm"]
    for e in summary:
        k = e["metrics"]["knn_top1"]
        xs = knn[e["values"]["mask.encoder"]]
        assert e["seeds"] == [0, 1, 2] and k["per_seed"] == xs
        assert k["mean"] == pytest.approx(statistics.fmean(xs)) and k["std"] == pytest.approx(statistics.stdev(xs))
        assert "ft_top1" not in e["metrics"]  # no fine-tuning in these rows: no column
    table = ablation.markdown_table(summary, ["mask.encoder"])
    assert "| mask.encoder | seeds | kNN | linear | kNN, random init |" in table
    assert f"| mgm | 3 | 35.0 ± {100 * statistics.stdev(knn['mgm']):.1f} |" in table
    png = ablation.plot(summary, ["mask.encoder"], tmp_path / "plot.png")
    assert png.stat().st_size > 5000


def test_bad_study_arguments_are_refused_before_any_work(tmp_path, capsys):
    assert ablation.main(["--out", str(tmp_path / "s"), "--vary", "mask.encoder=random,zigzag"]) == 2
    assert "zigzag" in capsys.readouterr().err
    assert ablation.main(["--out", str(tmp_path / "s"), "--vary", "mask.nope=1"]) == 2
    assert "mask.nope" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()

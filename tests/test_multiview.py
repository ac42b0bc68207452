import math

import numpy as np
import pytest
import torch
from torch import nn

from mvm.evaluate.multiview import (
    MultiViewDataset,
    average_views,
    classification_metrics,
    collate_views,
    confusion_matrix,
    crop_offsets,
    make_views,
    parse_views,
    predict_views,
)


def test_average_and_metrics_against_a_hand_computation():
    # two videos, two views, three classes
    logits = torch.tensor([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]],
                           [[0.0, 0.0, 3.0], [0.0, 1.0, 1.0]]])
    e = math.e
    v00 = [1 / (2 + e), e / (2 + e), 1 / (2 + e)]
    v01 = [e**2 / (e**2 + 2), 1 / (e**2 + 2), 1 / (e**2 + 2)]
    v10 = [1 / (2 + e**3), 1 / (2 + e**3), e**3 / (2 + e**3)]
    v11 = [1 / (1 + 2 * e), e / (1 + 2 * e), e / (1 + 2 * e)]
    hand = torch.tensor([[(a + b) / 2 for a, b in zip(v00, v01)], [(a + b) / 2 for a, b in zip(v10, v11)]])
    probs = average_views(logits)
    assert torch.allclose(probs, hand, atol=1e-6)
    # video 0: averaged probs 0.5 * (0.2119 + 0.7870) = 0.4995 for class 0 beat class 1's 0.3441
    m = classification_metrics(probs, torch.tensor([1, 2]))
    assert m["top1"] == 0.5 and m["top5"] == 1.0 and m["mean_class_acc"] == 0.5
    assert confusion_matrix(probs.argmax(1), torch.tensor([1, 2]), 3).tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, 1]]


def test_mean_class_accuracy_weights_classes_equally():
    probs = torch.eye(3)[[0, 0, 0, 1, 0]]  # class 0 x3 all right, class 1 right once of twice
    m = classification_metrics(probs, torch.tensor([0, 0, 0, 1, 1]))
    assert m["top1"] == pytest.approx(0.8) and m["mean_class_acc"] == pytest.approx(0.75)


def test_parse_views_and_crop_offsets():
    assert parse_views("5x3") == (5, 3) and parse_views("2X3") == (2, 3)
    with pytest.raises(ValueError, match="CLIPSxCROPS"):
        parse_views("0x3")
    assert crop_offsets(16, 8, 3) == [0, 4, 8] and crop_offsets(16, 8, 1) == [4] and crop_offsets(8, 8, 3) == [0, 0, 0]


def test_views_are_evenly_spaced_clips_and_left_centre_right_crops():
    f, h, w = 20, 8, 16
    frames = np.zeros((f, h, w, 3), np.uint8)
    frames[..., 0] = np.arange(f)[:, None, None]  # red = frame number
    frames[..., 1] = np.arange(w)[None, None, :]  # green = column
    views = make_views(frames, 4, 2, 8, num_clips=2, num_crops=3, mean=[0, 0, 0], std=[1, 1, 1])
    assert views.shape == (6, 3, 4, 8, 8)
    starts = [round(float(views[v, 0, 0, 0, 0]) * 255) for v in (0, 3)]
    assert starts == [0, 13]  # span 7 frames: first start 0, last 20 - 7 = 13
    assert [round(float(views[v, 0, t, 0, 0]) * 255) for v, t in [(3, 1), (3, 3)]] == [15, 19]
    cols = [round(float(views[v, 1, 0, 0, 0]) * 255) for v in range(3)]
    assert cols == [0, 4, 8]  # left, centre, right


def test_portrait_crops_run_top_to_bottom_and_resize_the_short_side():
    frames = np.zeros((4, 32, 16, 3), np.uint8)
    frames[..., 2] = np.arange(32)[None, :, None] * 4  # blue = row * 4
    views = make_views(frames, 2, 1, 8, 1, 3, [0, 0, 0], [1, 1, 1])  # 32x16 -> 16x8
    assert views.shape == (3, 3, 2, 8, 8)
    tops = [float(views[v, 2, 0, 0, 0]) * 255 for v in range(3)]
    assert tops[0] < tops[1] < tops[2]


def test_predict_views_averages_a_models_views_on_real_video(tmp_path):
    from mvm.data.video_io import encode_video

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        p = tmp_path / f"v{i}.mp4"
        encode_video(p, rng.integers(0, 255, (12, 16, 24, 3), dtype=np.uint8))
        paths.append((str(p), i))
    paths.append((str(tmp_path / "missing.mp4"), 0))
    ds = MultiViewDataset(paths, frames=4, stride=2, size=16, num_clips=2, num_crops=3,
                          mean=[0.5] * 3, std=[0.5] * 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_views)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 16 * 16, 3))
    out = predict_views(model, loader, torch.device("cpu"), max_views_per_batch=4)
    assert out["probs"].shape == (2, 3) and out["paths"] == [p for p, _ in paths[:2]]
    assert out["failed"] == [f"missing|{tmp_path / 'missing.mp4'}"]
    by_hand = model(ds[1]["views"]).softmax(-1).mean(0)
    assert torch.allclose(out["probs"][1], by_hand, atol=1e-5)

import torch

from mvm.evaluate.probe import knn_accuracy, linear_probe_accuracy


def _clusters(centres: torch.Tensor, n_per: int, seed: int, noise: float = 0.3):
    y = torch.arange(centres.shape[0]).repeat_interleave(n_per)
    x = centres[y] + noise * torch.randn(len(y), centres.shape[1], generator=torch.Generator().manual_seed(seed))
    return x, y


CENTRES = torch.randn(4, 8, generator=torch.Generator().manual_seed(0)) * 3


def test_knn_separates_clusters_and_fails_on_shuffled_labels():
    x, y = _clusters(CENTRES, 20, seed=1)
    xq, yq = _clusters(CENTRES, 10, seed=2)
    assert knn_accuracy(x, y, xq, yq, k=5) == 1.0
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    assert knn_accuracy(x, shuffled, xq, yq, k=5) < 0.6


def test_linear_probe_learns_separable_features():
    x, y = _clusters(CENTRES, 30, seed=4)
    assert linear_probe_accuracy(x[::2], y[::2], x[1::2], y[1::2], epochs=100) > 0.95


def test_probe_confusion_picture_and_class_names(tmp_path):
    from mvm.viz.confusion import class_names, plot_confusions

    (tmp_path / "classes.txt").write_text("left\nright\nup\n")
    assert class_names(tmp_path / "val.csv", 3) == ["left", "right", "up"]
    assert class_names(tmp_path / "val.csv", 4) == ["0", "1", "2", "3"]  # too few names: numbers
    out = plot_confusions({"a": [[2, 0, 0], [1, 1, 0], [0, 0, 3]], "b": [[0, 1, 1], [1, 0, 1], [1, 1, 1]]},
                          ["left", "right", "up"], tmp_path / "c.png")
    assert out.stat().st_size > 1000


def test_linear_probe_predictions_match_its_accuracy():
    from mvm.evaluate.probe import linear_probe_predict

    x, y = _clusters(CENTRES, 30, seed=5)
    pred = linear_probe_predict(x[::2], y[::2], x[1::2], 4, epochs=100)
    assert pred.shape == (60,)
    assert float((pred == y[1::2]).float().mean()) == linear_probe_accuracy(x[::2], y[::2], x[1::2], y[1::2], epochs=100)

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


def test_probe_features_are_served_from_the_cache_the_second_time(tmp_path):
    import os
    import time

    import numpy as np

    from mvm.config import DataConfig
    from mvm.data.video_io import encode_video
    from mvm.evaluate.features import cached_features, write_features
    from mvm.interop.load import save_mvm
    from mvm.models.variants import build_encoder

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        encode_video(tmp_path / f"v {i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
        lines.append(f"v {i}.mp4 {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    ckpt = save_mvm(build_encoder("tiny", patch=8), tmp_path / "enc.safetensors")
    data = DataConfig(frames=4, stride=2, size=32, workers=0)
    cache = tmp_path / "cache"
    first = cached_features(ckpt, str(tmp_path / "list.txt"), data, torch.device("cpu"), cache)
    t0 = time.perf_counter()
    second = cached_features(ckpt, str(tmp_path / "list.txt"), data, torch.device("cpu"), cache)
    assert not first.from_cache and second.from_cache and time.perf_counter() - t0 < 2
    assert torch.equal(first.features, second.features) and second.labels.tolist() == [0, 1, 0]
    assert first.features.shape == (3, 192) and second.paths == first.paths
    # another clip setting, or a checkpoint written again, is computed afresh
    assert not cached_features(ckpt, str(tmp_path / "list.txt"), DataConfig(frames=4, stride=1, size=32, workers=0),
                               torch.device("cpu"), cache).from_cache
    os.utime(ckpt, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not cached_features(ckpt, str(tmp_path / "list.txt"), data, torch.device("cpu"), cache).from_cache
    files = write_features(second, tmp_path / "f.npy")
    assert np.load(files[0]).shape == (3, 192) and files[1].read_text().splitlines()[1].endswith("v 0.mp4,0")


def test_probe_command_refuses_unlabelled_data_before_extracting(tmp_path, capsys):
    import numpy as np

    from mvm.cli import main
    from mvm.data.video_io import encode_video
    from mvm.interop.load import save_mvm
    from mvm.models.variants import build_encoder

    flat = tmp_path / "flat"  # a folder of videos without class sub-folders: no labels
    flat.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        encode_video(flat / f"v{i}.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    ckpt = save_mvm(build_encoder("tiny", patch=8), tmp_path / "enc.safetensors")
    rc = main(["probe", str(ckpt), "--train", str(flat), "--val", str(flat), "--frames", "4", "--size", "32",
               "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "have no label" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # refused before any feature was computed


def test_confusion_picture_keeps_the_classes_that_occur(tmp_path):
    from mvm.viz.confusion import plot_confusions

    m = [[0] * 400 for _ in range(400)]
    m[3][3], m[7][3], m[7][7] = 5, 2, 4  # two of 400 classes occur
    out = plot_confusions({"a": m}, [str(i) for i in range(400)], tmp_path / "c.png")
    import matplotlib.image as mpimg

    h, w = mpimg.imread(out).shape[:2]
    assert out.stat().st_size > 1000 and max(h, w) < 1000  # sized for 2 classes, not 400

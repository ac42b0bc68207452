"""Frame sampling: stride, random / centred / multi-view starts, short-video padding, bad input."""

import numpy as np
import pytest

from mvm.data.sampling import clip_indices, clip_span


def test_eval_clip_is_centred_with_the_stride():
    idx = clip_indices(100, 8, 4, train=False)
    assert idx.dtype == np.int64 and idx.shape == (8,)
    assert np.all(np.diff(idx) == 4)
    span = clip_span(8, 4)  # 29 frames touched
    assert idx[0] == (100 - span) // 2 and idx[-1] == idx[0] + span - 1


def test_train_start_is_random_within_the_video_and_reproducible():
    starts = set()
    for seed in range(200):
        idx = clip_indices(40, 4, 3, train=True, rng=np.random.default_rng(seed))
        assert idx.min() >= 0 and idx.max() <= 39 and np.all(np.diff(idx) == 3)
        starts.add(int(idx[0]))
    assert starts == set(range(40 - clip_span(4, 3) + 1))  # every start 0..30 is reachable
    a = clip_indices(40, 4, 3, train=True, rng=np.random.default_rng(7))
    b = clip_indices(40, 4, 3, train=True, rng=np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_short_video_is_padded_with_its_last_frame():
    assert clip_indices(5, 4, 2, train=True, rng=np.random.default_rng(0)).tolist() == [0, 2, 4, 4]
    assert clip_indices(6, 8, 1, train=False).tolist() == [0, 1, 2, 3, 4, 5, 5, 5]


def test_one_frame_video_and_stride_longer_than_the_video():
    assert clip_indices(1, 4, 3, train=False).tolist() == [0, 0, 0, 0]
    assert clip_indices(1, 4, 3, train=True, rng=np.random.default_rng(0)).tolist() == [0, 0, 0, 0]
    assert clip_indices(5, 3, 10, train=False).tolist() == [0, 4, 4]


def test_exact_fit_and_frames_times_stride():
    # span == num_frames: only one start exists, for training and evaluation alike
    assert clip_indices(7, 4, 2, train=True, rng=np.random.default_rng(3)).tolist() == [0, 2, 4, 6]
    # num_frames == frames * stride: stride - 1 frames of slack
    assert clip_indices(8, 4, 2, train=False).tolist() == [0, 2, 4, 6]
    starts = {clip_indices(8, 4, 2, train=True, rng=np.random.default_rng(s))[0] for s in range(50)}
    assert starts == {0, 1}


def test_multi_view_clips_are_evenly_spaced_from_first_to_last():
    views = [clip_indices(50, 4, 2, train=False, clip_index=k, num_clips=5) for k in range(5)]
    starts = [int(v[0]) for v in views]
    assert starts[0] == 0 and views[-1][-1] == 49
    assert starts == sorted(starts) and max(np.diff(starts)) - min(np.diff(starts)) <= 1
    # a short video gives the same padded clip for every view
    assert all(clip_indices(3, 4, 2, train=False, clip_index=k, num_clips=3).tolist() == [0, 2, 2, 2]
               for k in range(3))


@pytest.mark.parametrize("kwargs", [
    dict(num_frames=0, frames=4, stride=1), dict(num_frames=10, frames=0, stride=1),
    dict(num_frames=10, frames=4, stride=0), dict(num_frames=10, frames=4, stride=1, num_clips=0),
    dict(num_frames=10, frames=4, stride=1, num_clips=2, clip_index=2),
])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        clip_indices(train=False, **kwargs)

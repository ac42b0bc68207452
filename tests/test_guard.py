import os
import signal

import pytest
import torch

from mvm.train.guard import BadDataTracker, NonFiniteGuard, StopSignal, TooManyNonFinite, TooMuchBadData


def test_bad_data_counts_and_threshold():
    t = BadDataTracker(max_fraction=0.25, min_samples=8)
    t.update(8, ["missing|a.mp4", "empty_file|b.mp4"])
    assert t.summary() == {"bad_samples": 2, "bad_by_reason": {"missing": 1, "empty_file": 1}, "bad_files": 2}
    with pytest.raises(TooMuchBadData, match="over data.max_bad_fraction=0.25"):
        t.update(2, ["not_video|c.mp4", "not_video|d.mp4", "not_video|e.mp4"])


def test_bad_data_threshold_on_distinct_files_against_the_dataset_size():
    six = BadDataTracker(max_fraction=0.1, dataset_size=6)
    for _ in range(10):  # one bad file of six, reported again by a racing worker: trains on
        six.update(4, ["not_video|bad.mp4"])
    assert six.summary() == {"bad_samples": 1, "bad_by_reason": {"not_video": 1}, "bad_files": 1}
    with pytest.raises(TooMuchBadData, match=r"2 of the 6 files failed .*at most 1"):
        six.update(4, ["missing|gone.mp4"])
    big = BadDataTracker(max_fraction=0.2, dataset_size=10)
    big.update(1, ["missing|a", "missing|b"])
    with pytest.raises(TooMuchBadData):
        big.update(1, ["missing|c"])


def test_bad_data_state_round_trip():
    t = BadDataTracker(1.0)
    t.update(4, ["missing|a.mp4"])
    u = BadDataTracker(1.0)
    u.load_state_dict(t.state_dict())
    assert u.summary() == t.summary() and u.good == 4


def test_nonfinite_guard_decides_on_the_device_and_settles_later(caplog):
    g = NonFiniteGuard(limit=2)
    one, nan = torch.tensor(1.0), torch.tensor(float("nan"))
    assert [bool(g.check(s, loss, gn)) for s, (loss, gn) in enumerate([(one, one), (nan, one), (one, one),
                                                                        (one, torch.tensor(float("inf")))])] \
        == [False, True, False, True]
    assert g.skipped == 0  # nothing read yet
    with caplog.at_level("WARNING"):
        g.settle()
    assert g.skipped == 2 and g.consecutive == 1 and "2 step(s) from step 1 on skipped" in caplog.text
    g.settle()  # nothing new
    assert g.skipped == 2
    assert bool(g.check(4, nan, one))  # the run of skips carries over a settle: 2 in a row at step 4
    assert not bool(g.check(5, one, one))  # a later good step does not hide it
    with pytest.raises(TooManyNonFinite, match="step 4: 2 consecutive"):
        g.settle()
    assert g.skipped == 3


def test_sigterm_sets_flag_and_restores_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before

import os
import signal

import pytest

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


def test_nonfinite_guard_skips_then_stops():
    g = NonFiniteGuard(limit=2)
    assert g.ok(0, True) and not g.ok(1, False) and g.ok(2, True)
    assert not g.ok(3, False)
    with pytest.raises(TooManyNonFinite, match="step 4: 2 consecutive"):
        g.ok(4, False)
    assert g.skipped == 3


def test_sigterm_sets_flag_and_restores_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before

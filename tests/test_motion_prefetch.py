"""The prefetch hint of the compiled loops: it compiles and changes no value."""

from __future__ import annotations

import numba
import numpy as np

from mvm.motion.prefetch import prefetch


@numba.njit
def _sum_with_prefetch(a, ahead):
    total = 0
    for i in range(a.size):
        if i + ahead < a.size:
            prefetch(a, i + ahead)
        total += a[i]
    return total


def test_prefetch_compiles_for_each_array_type_and_changes_nothing():
    rng = np.random.default_rng(0)
    for dtype in (np.uint8, np.int64, np.float32):
        a = rng.integers(0, 100, 10_000).astype(dtype)  # integer values: every sum is exact
        before = a.copy()
        for ahead in (0, 8, 20_000):  # on the element itself, further on, never
            assert _sum_with_prefetch(a, ahead) == int(a.astype(np.int64).sum())
        assert np.array_equal(a, before)


def test_prefetch_is_refused_outside_compiled_array_code():
    # typing refuses a non-array or a non-integer index (a compile error, not a silent no-op)
    @numba.njit
    def bad(x):
        prefetch(x, 0)

    try:
        bad(3)
    except numba.core.errors.TypingError:
        pass
    else:
        raise AssertionError("prefetch of an integer compiled")

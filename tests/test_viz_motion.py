"""The motion picture's colour key agrees with the colours it explains."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from mvm.viz.motion import direction_colours, draw_direction_key


def test_key_shows_each_direction_in_its_colour():
    fig, ax = plt.subplots()
    draw_direction_key(ax, vmax=4.0, size=41)
    rgba = ax.get_images()[0].get_array()
    plt.close(fig)
    c = 20  # centre pixel; rows grow downwards, as image y does
    for (row, col), vec in {(c, 40): (4.0, 0.0), (40, c): (0.0, 4.0), (c, 0): (-4.0, 0.0), (0, c): (0.0, -4.0)}.items():
        expected = direction_colours(np.array(vec), 4.0)
        assert np.allclose(rgba[row, col, :3], expected, atol=1e-6), (row, col, vec)
    assert rgba[c, c, :3].max() == 0  # no motion: black
    assert rgba[0, 0, 3] == 0  # outside the wheel: transparent

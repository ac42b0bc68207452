"""Pictures: masks, motion, reconstructions, curves. Matplotlib with the Agg backend, files only."""

import matplotlib

matplotlib.use("Agg")

"""Pictures: masks, motion, reconstructions, curves. Matplotlib with the Agg backend, files only."""

import matplotlib

matplotlib.use("Agg")


def picture_path(out: str, video: str, what: str) -> str:
    """Where a command's ``--out`` picture goes, as the user will find it: an existing folder gets
    ``<video name>.<what>.png`` inside it, a name without a suffix gets ``.png`` (matplotlib adds
    it anyway, and the command must print the name it really wrote)."""
    from pathlib import Path

    p = Path(out)
    if p.is_dir():
        return str(p / f"{Path(video).name}.{what}.png")
    return str(p) if p.suffix else str(p) + ".png"

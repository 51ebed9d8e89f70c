"""Write a matplotlib figure to a PNG file atomically, the one way every gsp_hub figure is saved."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from gsp_hub.io import atomic_file

__all__ = ["check_png_path", "save_png"]


def check_png_path(path: str | os.PathLike[str], argument: str = "path") -> Path:
    """``path`` as an absolute :class:`~pathlib.Path`; raises ValueError (naming ``argument``) unless it ends in
    ``.png``. Call it before any work so that a wrong name fails fast."""
    target = Path(path).expanduser().absolute()
    if target.suffix.lower() != ".png":
        raise ValueError(f"{argument} must end in .png, got {target.name!r}; e.g. {target.with_suffix('.png').name}.")
    return target


def save_png(figure: Figure, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Save ``figure`` to ``path`` (``.png``; its folder is created): rendered into a temp file in the same folder,
    then moved into place with ``os.replace``, so that a reader never sees a half-written image. Returns the
    absolute path."""
    target = check_png_path(path)
    with atomic_file(target) as temp:
        figure.savefig(temp, dpi=dpi)
    return target

"""facelock: the composition root. The only package that imports the others (edge, convert, deploy);
nothing imports it. The console script `facelock` is `facelock.cli:main`."""

from edge import __version__

__all__ = ["__version__"]

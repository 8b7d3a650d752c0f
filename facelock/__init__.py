"""facelock: the composition root. The only package that imports the others (edge, convert, deploy);
nothing imports it. The console script `facelock` is `facelock.cli:main`.

Importing it fixes glibc's malloc thresholds for the process (edge.service.heap): it has to happen before
numpy and the models allocate, and every `facelock` command, the lock's `facelock run` first, starts here."""

from edge import __version__
from edge.service.heap import bound_heap

bound_heap()

__all__ = ["__version__"]

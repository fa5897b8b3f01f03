"""Which build of hio_http runs: its per-request modules compiled by mypyc (what an install
makes where that builds, see setup.py) or pure Python (an editable install, HIO_HTTP_COMPILE=0,
or where compiling failed). Both are the same code."""

from __future__ import annotations

from . import stewarding


def build_kind() -> str:
    """'compiled' or 'pure'."""
    return "pure" if stewarding.__file__.endswith(".py") else "compiled"

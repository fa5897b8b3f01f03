"""`--reload`, for development: a worker watches the source files of the app it imported (their
modification times, polled once a second: standard library only) and, when one changes and
still compiles, asks its supervisor for a reload; a file that does not compile is logged and
the old code serves on. Never used in production: polling costs a stat per file per second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import site
import sys
import sysconfig
from typing import Callable, Iterable, Optional

from .doing import Doer

logger = logging.getLogger("hio_http.server")

POLL_INTERVAL = 1.0  # seconds between looks at the files


def app_sources(modules: Optional[dict] = None) -> list:
    """The .py files of the modules loaded now, except the standard library's and installed
    packages': the app's own code."""
    modules = sys.modules if modules is None else modules
    places = [path for name, path in sysconfig.get_paths().items()
              if name in ("stdlib", "platstdlib", "purelib", "platlib")]
    places += site.getsitepackages() + [site.getusersitepackages()]
    excluded = {os.path.realpath(path) + os.sep for path in places}
    here = os.path.realpath(os.path.dirname(__file__)) + os.sep
    sources = set()
    for module in list(modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if real.startswith(here) or any(real.startswith(prefix) for prefix in excluded):
            continue
        sources.add(real)
    return sorted(sources)


class SourceWatch(Doer):
    """Polls `paths`; calls `changed()` once a changed file compiles (then stops watching:
    a new worker with the new code watches again)."""

    def __init__(self, paths: Iterable[str], changed: Callable[[], None], **kwa):
        kwa.setdefault("tock", POLL_INTERVAL)
        super().__init__(**kwa)
        self.changed = changed
        self.seen = {path: _stamp(path) for path in paths}

    def recur(self, tyme: float) -> bool:
        edited = []
        for path, stamp in self.seen.items():
            now = _stamp(path)
            if now != stamp:
                self.seen[path] = now
                edited.append(path)
        if not edited:
            return False
        for path in edited:
            if not compiles(path):
                return False  # logged; the old code serves on until the file is fixed
            _forget_bytecode(path)
        logger.info("reloading: %s changed", ", ".join(edited))
        self.changed()
        return True


def compiles(path: str) -> bool:
    """Whether the file at `path` compiles; logs why not."""
    try:
        with open(path, "rb") as file:
            compile(file.read(), path, "exec")
    except FileNotFoundError:
        return True  # removed: an import will say whether that matters
    except (SyntaxError, ValueError) as ex:
        logger.error("not reloading: %s does not compile: %s: %s; the old code serves on",
                     path, type(ex).__name__, ex)
        return False
    return True


def _stamp(path: str) -> tuple:
    try:
        status = os.stat(path)
    except OSError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)


def _forget_bytecode(path: str) -> None:
    """Cached bytecode is checked by whole-second mtime and size: an edit within the same
    second keeping the size would be missed. Drop the cache so the new worker compiles."""
    try:
        os.unlink(importlib.util.cache_from_source(path))
    except (OSError, ValueError, NotImplementedError):
        pass

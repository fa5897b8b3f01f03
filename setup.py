"""Build shim: all metadata lives in setup.cfg.

The modules on every request's path are compiled with mypyc (which comes with mypy) into
extension modules beside their sources wherever that builds. They are the same code as the
pure-Python modules, which run wherever it does not. HIO_HTTP_COMPILE chooses:

- unset: compile when mypy and a C compiler are at hand, else install pure (with a warning);
  an editable install stays pure, as compiled modules would hide edits to the sources;
- "1": compile, and fail the install if that fails;
- "0": never compile.
"""
import os
import sys
import warnings

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The per-request path; each type-checks strictly, which mypyc needs.
COMPILED = ["request", "requesting", "framing", "responding", "wsgi", "hosting", "stewarding",
            "serving", "net", "polling", "grammar", "chunked", "stalls"]
# The runtime library the compiled modules share, kept inside the package so that whatever
# imports hio_http finds it (a top-level library would need the project root on sys.path).
GROUP = "hio_http._compiled"
EDITABLE_COMMANDS = ("editable_wheel", "develop")


def choice() -> str:
    """'1', '0' or 'try', from HIO_HTTP_COMPILE and the kind of install."""
    chosen = os.environ.get("HIO_HTTP_COMPILE", "")
    if chosen in ("0", "1"):
        return chosen
    if chosen:
        raise SystemExit(f"HIO_HTTP_COMPILE must be 0 or 1 (or unset), not {chosen!r}")
    if any(command in sys.argv for command in EDITABLE_COMMANDS):
        return "0"
    return "try"


class OptionalBuildExt(build_ext):
    """Builds the compiled modules, or, when that fails, leaves none of them behind: a module
    whose shared library did not build could not even be imported."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # a missing compiler, headers, or a compile error
            for output in self.get_outputs():
                if os.path.exists(output):
                    os.remove(output)
            warnings.warn(f"hio_http: compiling failed ({error}); installing pure Python")


def compiled_extensions(required: bool) -> list:
    try:
        from mypyc.build import mypycify

        return mypycify([f"hio_http/{name}.py" for name in COMPILED], opt_level="3",
                        group_name=GROUP)
    except (Exception, SystemExit) as error:  # mypy missing, or it found the code wanting
        if required:
            raise
        warnings.warn(f"hio_http: mypyc unavailable ({error!r}); installing pure Python")
        return []


mode = choice()
if mode == "0":
    setup()
elif mode == "1":
    setup(ext_modules=compiled_extensions(required=True))
else:
    setup(ext_modules=compiled_extensions(required=False),
          cmdclass={"build_ext": OptionalBuildExt})

"""Build shim: all metadata lives in setup.cfg.

HIO_HTTP_COMPILE=1 compiles the modules on every request's path with mypyc (which comes with
mypy) into extension modules beside their sources; the pure-Python modules stay the same code
and are what an install without it runs.
"""
import os

from setuptools import setup

# The per-request path; each type-checks strictly, which mypyc needs.
COMPILED = ["requesting", "framing", "responding", "wsgi", "stewarding", "serving", "net",
            "polling", "grammar", "chunked"]

ext_modules = []
if os.environ.get("HIO_HTTP_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify([f"hio_http/{name}.py" for name in COMPILED], opt_level="3")

setup(ext_modules=ext_modules)

"""The two builds (setup.py): the per-request modules compiled by mypyc where that builds, pure
Python otherwise. The suite runs against either; CI runs it against both, and names the one it
means in HIO_HTTP_EXPECT_BUILD, so a compiled run that quietly fell back to pure Python fails."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hio_http.build import build_kind
from hio_http.version import __version__

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hio_http"


def test_the_build_running_is_the_one_expected():
    built_here = any(PACKAGE.glob("stewarding.*.so"))  # compiled in place beside the sources
    expected = os.environ.get("HIO_HTTP_EXPECT_BUILD") or ("compiled" if built_here else "pure")
    assert build_kind() == expected


def test_version_names_the_build():
    shown = subprocess.run([sys.executable, "-m", "hio_http", "--version"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert shown.stdout == f"hio_http {__version__} ({build_kind()})\n"


def test_a_wrong_compile_choice_is_refused():
    outcome = subprocess.run([sys.executable, "setup.py", "--name"], cwd=ROOT, timeout=60,
                             capture_output=True, text=True,
                             env=dict(os.environ, HIO_HTTP_COMPILE="yes"))
    assert outcome.returncode != 0
    assert "HIO_HTTP_COMPILE must be 0 or 1 (or unset), not 'yes'" in outcome.stderr


@pytest.mark.slow
def test_a_failed_compile_installs_pure_python_and_leaves_nothing_half_built(tmp_path):
    pytest.importorskip("mypyc")  # the test extra brings mypy, and with it mypyc
    for name in ("setup.py", "setup.cfg", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(PACKAGE, tmp_path / "hio_http",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    environ = {key: value for key, value in os.environ.items() if key != "HIO_HTTP_COMPILE"}
    environ["CC"] = "false"  # a C compiler that always fails
    outcome = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                             cwd=tmp_path, env=environ, capture_output=True, text=True,
                             timeout=600)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert "compiling failed" in outcome.stderr
    assert not list((tmp_path / "hio_http").glob("*.so"))
    probe = subprocess.run([sys.executable, "-c", "from hio_http.build import build_kind; "
                            "print(build_kind())"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert probe.stdout == "pure\n", probe.stderr

"""The servers under test: how each is installed (its own throwaway virtualenv) and started.

A server's `command(python_bin, port)` is the command line without the CPU pinning; run.py adds
`taskset -c 0` and starts it in a session of its own with scripts/bench as working directory.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import venv
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PROJECT_FILES = ("hio_http", "setup.py", "setup.cfg", "README.md", "LICENSE")


@dataclasses.dataclass
class ServerSpec:
    name: str  # as shown in the tables
    venv: str  # virtualenv directory name under <out>/venvs
    packages: tuple  # what pip installs into that venv (besides Falcon)
    command: Callable[[Path, int], list]  # (venv bin dir, port) -> argv
    note: str = ""  # how it is configured, for the README table
    cases: Optional[tuple] = None  # only these cases (None: all but hio_http-only ones)
    env: dict = dataclasses.field(default_factory=dict)


def _hio_http(bin_dir: Path, port: int) -> list:
    return [str(bin_dir / "python"), "-m", "hio_http", "--bind", f"127.0.0.1:{port}", "apps:app"]


def _hio_http_threads(threads: int):
    def command(bin_dir: Path, port: int) -> list:
        return _hio_http(bin_dir, port) + ["--threads", str(threads)]
    return command


def _hio_http_wide(bin_dir: Path, port: int) -> list:
    return [str(bin_dir / "python"), "host_hio_http.py", "--port", str(port),
            "--max-connections", "20000"]


def _waitress(threads: Optional[int]):
    def command(bin_dir: Path, port: int) -> list:
        argv = [str(bin_dir / "waitress-serve"), f"--listen=127.0.0.1:{port}"]
        if threads is not None:
            argv.append(f"--threads={threads}")
        return argv + ["apps:app"]
    return command


def _gunicorn(bin_dir: Path, port: int) -> list:
    return [str(bin_dir / "gunicorn"), "--workers", "1", "--worker-class", "sync",
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "apps:app"]


def _gunicorn_gthread(threads: int):
    def command(bin_dir: Path, port: int) -> list:
        return [str(bin_dir / "gunicorn"), "--workers", "1", "--worker-class", "gthread",
                "--threads", str(threads), "--bind", f"127.0.0.1:{port}",
                "--log-level", "warning", "apps:app"]
    return command


def _granian(threads: int):
    def command(bin_dir: Path, port: int) -> list:
        return [str(bin_dir / "granian"), "--interface", "wsgi", "--workers", "1",
                "--runtime-threads", "1", "--blocking-threads", str(threads),
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "apps:app"]
    return command


def _uwsgi(bin_dir: Path, port: int) -> list:
    # One process, one thread, HTTP/1.1 keep-alive on its own http socket (no router process).
    return [str(bin_dir / "uwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--wsgi-file",
            "apps.py", "--callable", "app", "--processes", "1", "--threads", "1",
            "--listen", "1024", "--disable-logging", "--need-app"]


def _cheroot(bin_dir: Path, port: int) -> list:
    # Its listen backlog defaults to 5: wrk's 100 simultaneous connects would then meet SYN
    # drops and 1 s retries, so it gets the 1024 most of the others use.
    return [str(bin_dir / "cheroot"), "--bind", f"127.0.0.1:{port}",
            "--request-queue-size", "1024", "apps:app"]


def _bjoern(bin_dir: Path, port: int) -> list:
    return [str(bin_dir / "python"), "host_bjoern.py", "--port", str(port)]


def _hio(tock: float):
    def command(bin_dir: Path, port: int) -> list:
        return [str(bin_dir / "python"), "host_hio.py", "--port", str(port), "--tock", str(tock)]
    return command


IDLE_ONLY = ("idle_10k", "idle_1k")
# The cases where apps block, and the peers that host blocking apps on threads.
THREADED_CASES = ("block_c10", "block_probe", "hello_c10", "json_c10", "close_c10", "sse_1k",
                  "idle_cpu")
BASELINE = "hio_http baseline"  # hio_http as at --baseline REV, installed from git
PURE = "hio_http pure"  # hio_http as now, not compiled (HIO_HTTP_COMPILE=0)
BASELINE_CASES = ("hello_c1", "hello_c10", "json_c10", "close_c10", "upload", "download")
# What `pip install .` builds with: mypy brings mypyc, which compiles the per-request modules.
BUILD_PACKAGES = ("httptools", "mypy_extensions", "mypy")

SERVERS = [
    ServerSpec("hio_http", "hio_http", (*BUILD_PACKAGES, "py-spy"), _hio_http,
               "its CLI, built as `pip install .` builds it (the per-request modules compiled "
               "by mypyc), default tock 0.03125, default settings (max_connections 1000)"),
    ServerSpec(PURE, "hio_http-pure", ("httptools", "mypy_extensions"), _hio_http,
               "its CLI, built with HIO_HTTP_COMPILE=0 (pure Python), default settings",
               cases=BASELINE_CASES),
    ServerSpec("hio_http threads=4", "hio_http", ("httptools", "mypy_extensions", "py-spy"),
               _hio_http_threads(4),
               "its CLI with --threads 4 (app calls on a pool of 4 threads)",
               cases=THREADED_CASES),
    ServerSpec(BASELINE, "hio_http-baseline", BUILD_PACKAGES, _hio_http,
               "its CLI as at the --baseline revision (default HEAD), built as `pip install .` "
               "built it then, default settings",
               cases=BASELINE_CASES),
    ServerSpec("hio_http wide", "hio_http", ("httptools", "mypy_extensions", "py-spy"),
               _hio_http_wide,
               "host_hio_http.py: max_connections=20000, otherwise as the CLI", cases=IDLE_ONLY),
    ServerSpec("waitress-4", "waitress", ("waitress",), _waitress(None),
               "waitress-serve, default threads (4), connection_limit 100"),
    ServerSpec("waitress-1", "waitress", ("waitress",), _waitress(1), "waitress-serve --threads=1"),
    ServerSpec("gunicorn-sync", "gunicorn", ("gunicorn",), _gunicorn,
               "1 sync worker: closes each connection after one response, then lingers up to "
               "2 s for the client's close"),
    ServerSpec("gunicorn-gthread-4", "gunicorn", ("gunicorn",), _gunicorn_gthread(4),
               "1 gthread worker, 4 threads", cases=THREADED_CASES),
    ServerSpec("granian-4", "granian", ("granian",), _granian(4),
               "granian --interface wsgi, 1 worker, 1 runtime thread, 4 blocking threads",
               cases=THREADED_CASES),
    ServerSpec("granian", "granian", ("granian",), _granian(1),
               "granian --interface wsgi, 1 worker, 1 runtime thread, 1 blocking thread"),
    ServerSpec("uwsgi", "uwsgi", ("uwsgi",), _uwsgi,
               "uWSGI --http11-socket (HTTP/1.1 keep-alive on), 1 process, 1 thread"),
    ServerSpec("cheroot", "cheroot", ("cheroot",), _cheroot,
               "cheroot CLI, default 10 threads, --request-queue-size 1024 (listen backlog; default 5)"),
    ServerSpec("bjoern", "bjoern", ("bjoern",), _bjoern, "bjoern.run (libev, C)"),
    ServerSpec("hio tock=0", "hio", ("hio",), _hio(0.0),
               "hio.core.http.Server under hio's Doist(real=True), tock 0.0 (busy loop)"),
    ServerSpec("hio tock=0.001", "hio", ("hio",), _hio(0.001), "as above, tock 0.001"),
    ServerSpec("hio tock=0.03125", "hio", ("hio",), _hio(0.03125), "as above, tock 0.03125"),
]

REFERENCES = ("waitress-4", "hio tock=0.001")  # every figure is also shown as a ratio to these


def find(name: str) -> ServerSpec:
    for spec in SERVERS:
        if spec.name == name:
            return spec
    raise KeyError(name)


class InstallError(Exception):
    """A server's environment could not be built; the message says why, in one line."""


def ensure_venv(spec: ServerSpec, venvs: Path, logs: Path, progress, offline_python=None,
                baseline: str = "HEAD") -> Path:
    """The bin directory of the server's venv, created and installed on first use.

    hio_http is reinstalled from a copy of the working tree on every run, so the benchmark
    measures the code as it is now (and nothing is written inside the repo). `offline_python`:
    use that interpreter for hio_http instead (the smoke test: no venv, no network).
    """
    if spec.venv == "hio_http" and offline_python:
        return _shim(venvs / "hio_http-offline", offline_python)
    root = venvs / spec.venv
    bin_dir = root / "bin"
    marker = root / ".bench-installed"
    wanted = " ".join(("falcon",) + spec.packages)
    log = logs / f"install-{spec.venv}.log"
    if not (marker.exists() and marker.read_text() == wanted):
        progress(f"installing {spec.venv} venv: {wanted} (log: {log})")
        if root.exists():
            shutil.rmtree(root)
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        _pip(bin_dir, ["install", "--upgrade", "pip", "setuptools", "wheel"], log)
        if spec.venv == "bjoern":
            _ensure_libev(log, progress)
        _pip(bin_dir, ["install", "falcon", *spec.packages], log)
        marker.write_text(wanted)
    if spec.venv in ("hio_http", "hio_http-pure") and root not in _PROJECT_INSTALLED:
        _install_project(bin_dir, log, pure=spec.venv == "hio_http-pure")
        _PROJECT_INSTALLED.add(root)
    if spec.venv == "hio_http-baseline" and root not in _PROJECT_INSTALLED:
        _install_revision(bin_dir, log, baseline)
        _PROJECT_INSTALLED.add(root)
    return bin_dir


_PROJECT_INSTALLED: set = set()  # venvs that got this run's snapshot of hio_http


def _shim(root: Path, python: str) -> Path:
    """A bin directory whose `python` execs `python` (same pid), standing in for a venv."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{os.path.abspath(python)}" "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def _pip(bin_dir: Path, args: list, log: Path, env: Optional[dict] = None) -> None:
    with open(log, "a") as handle:
        handle.write(f"\n$ pip {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run([str(bin_dir / "python"), "-m", "pip", "--disable-pip-version-check",
                                 *args], stdout=handle, stderr=subprocess.STDOUT, timeout=900,
                                env=env)
    if result.returncode != 0:
        raise InstallError(f"pip {' '.join(args)} failed: {_reason(log)}")


def _reason(log: Path) -> str:
    """The most telling line of a failed pip run."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for marker in ("fatal error:", "error: ", "ERROR: ", "Error:"):
        for line in lines:
            if marker in line and "--" not in line[:3]:
                return line[:200]
    return lines[-1][:200] if lines else "no output"


def _install_project(bin_dir: Path, log: Path, pure: bool = False) -> None:
    """Install hio_http from a snapshot of the working tree (no build isolation: offline), as
    `pip install .` builds it (compiled where the venv's mypy and a C compiler allow), or with
    `pure` not compiled (HIO_HTTP_COMPILE=0)."""
    with tempfile.TemporaryDirectory(prefix="hio_http-src-") as folder:
        for name in PROJECT_FILES:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, Path(folder) / name,  # no build of the tree's own
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
            elif source.exists():
                shutil.copy2(source, Path(folder) / name)
        env = {key: value for key, value in os.environ.items() if key != "HIO_HTTP_COMPILE"}
        if pure:
            env["HIO_HTTP_COMPILE"] = "0"
        _pip(bin_dir, ["install", "--no-deps", "--no-build-isolation", "--force-reinstall",
                       "--quiet", folder], log, env)


def _install_revision(bin_dir: Path, log: Path, revision: str) -> None:
    """Install hio_http as it was at git `revision`, to measure a change against it."""
    with tempfile.TemporaryDirectory(prefix="hio_http-rev-") as folder:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, *PROJECT_FILES],
                                 capture_output=True, timeout=60)
        if archive.returncode != 0:
            raise InstallError(f"git archive {revision}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True,
                       timeout=60)
        _pip(bin_dir, ["install", "--no-deps", "--no-build-isolation", "--force-reinstall",
                       "--quiet", folder], log)
        # its dependencies (httptools, falcon, wsproto) as released
        _pip(bin_dir, ["install", "--quiet", "wsproto"], log)


def _ensure_libev(log: Path, progress) -> None:
    """bjoern builds against libev: install Debian's libev-dev when its header is missing."""
    if Path("/usr/include/ev.h").exists():
        return
    if not shutil.which("apt-get") or os.geteuid() != 0:
        raise InstallError("libev-dev missing (ev.h) and apt-get unavailable")
    progress("installing libev-dev with apt-get (for bjoern)")
    with open(log, "a") as handle:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "libev-dev"]):
            subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=600)
    if not Path("/usr/include/ev.h").exists():
        raise InstallError("libev-dev could not be installed with apt-get")

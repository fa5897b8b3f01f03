"""The pieces run.py is built from: free ports, server processes (pinned, in their own session,
always stopped), wrk runs and the parsing of their output, and /proc readings of a server's
CPU time and memory. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

SERVER_CORE = "0"
CLIENT_CORE = "1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_live: dict = {}  # pid -> Popen of everything we started and have not reaped yet


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the kernel just handed out for 127.0.0.1 (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pinned(core: str, argv: list) -> list:
    return ["taskset", "-c", core, *argv]


def spawn(argv: list, cwd: Path, env: dict, log: Path, **kwa) -> subprocess.Popen:
    """Start `argv` in a session of its own (so its whole group can be stopped), output to
    `log`, with the highest file-descriptor limit allowed."""
    with open(log, "ab") as handle:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=kwa.pop("stdout", handle),
                                   stderr=handle, start_new_session=True,
                                   preexec_fn=_raise_fd_limit, **kwa)
    _live[process.pid] = process
    return process


def stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL what is left of it."""
    pid = process.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
    if session_pids(pid):  # stragglers of its session (a gunicorn worker) after it exited
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _live.pop(pid, None)


def stop_all() -> None:
    for process in list(_live.values()):
        stop(process, grace=2.0)


# -- /proc ---------------------------------------------------------------------------------

def session_pids(leader: int) -> list:
    """The processes in the session `leader` started (a server and any workers it forked)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[3]) == leader:
            pids.append(int(entry))
    return pids


def _stat_fields(pid: int) -> Optional[list]:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def cpu_seconds(leader: int) -> float:
    """CPU time the server's processes (every thread) have used so far: from the scheduler's
    nanosecond counters (/proc/PID/task/TID/schedstat), else utime+stime in clock ticks."""
    total = 0.0
    for pid in session_pids(leader):
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                    total += int(handle.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            if fields is not None:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    return total


def memory_kib(leader: int, field: str = "VmRSS") -> int:
    """Resident memory (or VmHWM, its peak) of the server's processes, KiB."""
    total = 0
    for pid in session_pids(leader):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def core_busy_seconds(core: str) -> float:
    """Time the CPU `core` spent running tasks (user, nice, system) or stolen by the
    hypervisor, from /proc/stat. Interrupt and softirq time is left out: on loopback most of
    it is the benchmark's own network traffic."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(
                int, line.split()[1:9])
            return (user + nice + system + steal) / CLOCK_TICKS
    return 0.0


def cpu_percent_over(leader: int, seconds: float) -> float:
    """The server's CPU use (% of one core) over the next `seconds`."""
    before, started = cpu_seconds(leader), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(leader) - before) / (time.monotonic() - started)


# -- HTTP probes -----------------------------------------------------------------------------

def request_once(port: int, path: str = "/hello", timeout: float = 5.0) -> float:
    """Seconds for one GET on a new connection, to the end of a Content-Length response.
    Raises OSError (socket.timeout included) or ValueError for a non-200 answer."""
    started = time.monotonic()
    deadline = started + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while True:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                match = re.search(rb"(?im)^content-length:\s*(\d+)", data[:end])
                if match and len(data) >= end + 4 + int(match.group(1)):
                    break
    elapsed = time.monotonic() - started
    if not data.startswith(b"HTTP/1.") or data[9:12] != b"200":
        raise ValueError(f"unexpected answer {data[:40]!r}")
    return elapsed


def wait_ready(process: subprocess.Popen, port: int, timeout: float = 20.0) -> Optional[str]:
    """None once the server answers GET /hello with 200, else why not (bounded retries)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"exited with status {process.returncode}"
        try:
            request_once(port, timeout=1.0)
            return None
        except (OSError, ValueError) as ex:
            last = str(ex) or type(ex).__name__
        time.sleep(0.1)
    return f"not answering after {timeout:.0f} s ({last})"


# -- wrk -------------------------------------------------------------------------------------

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
SIZES = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}  # wrk: binary


def wrk_command(url: str, connections: int, seconds: int, script: Optional[Path] = None,
                headers: tuple = (), timeout: int = 5) -> list:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={timeout}s",
            "--latency"]
    for header in headers:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", str(script)]
    return pinned(CLIENT_CORE, argv + [url])


def run_wrk(url: str, connections: int, seconds: int, server: Optional[int] = None,
            **kwa) -> dict:
    """Run wrk pinned to the client core; its parsed output, plus `client_other_pct`: how much
    of the client core went to anything but wrk meanwhile (other processes, steal), and with
    `server` (its session leader) `cpu_pct`, the server's CPU use, and `server_other_pct`, what
    else ran on the server's core."""
    argv = wrk_command(url, connections, seconds, **kwa)
    if server is not None:
        server_before = cpu_seconds(server)
        server_core_before = core_busy_seconds(SERVER_CORE)
    core_before, started = core_busy_seconds(CLIENT_CORE), time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, text=True)
        try:
            usage = _wait_with_usage(process, seconds + 30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.monotonic() - started
    parsed = parse_wrk(stdout)
    if process.returncode != 0 and "rps" not in parsed:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()[:200]}")
    wrk_cpu = usage.ru_utime + usage.ru_stime
    other = core_busy_seconds(CLIENT_CORE) - core_before - wrk_cpu
    parsed["client_other_pct"] = max(0.0, 100.0 * other / wall)
    if server is not None:
        used = cpu_seconds(server) - server_before
        parsed["cpu_pct"] = 100.0 * used / wall
        other = core_busy_seconds(SERVER_CORE) - server_core_before - used
        parsed["server_other_pct"] = max(0.0, 100.0 * other / wall)
    parsed["raw"] = stdout
    return parsed


def _wait_with_usage(process: subprocess.Popen, timeout: float):
    """Reap `process` (within `timeout` s) and return its resource usage."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(process.args, timeout)
        time.sleep(0.01)


def _seconds(text: str) -> Optional[float]:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    return float(match.group(1)) * UNITS[match.group(2)] if match else None


def parse_wrk(text: str) -> dict:
    """Requests/s, latency percentiles (s), request count and errors from `wrk --latency`."""
    result = {"errors": 0, "socket_errors": {}, "non_2xx": 0}
    match = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if match:
        result["rps"] = float(match.group(1))
    match = re.search(r"(\d+) requests in ([\d.]+\w+),", text)
    if match:
        result["requests"] = int(match.group(1))
        result["seconds"] = _seconds(match.group(2))
    distribution = text.split("Latency Distribution", 1)
    if len(distribution) == 2:
        for percent, value in re.findall(r"^\s+(\d+)%\s+(\S+)", distribution[1], re.M):
            result[f"p{percent}"] = _seconds(value)
    match = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", text)
    if match:
        result["bytes_per_s"] = float(match.group(1)) * SIZES[match.group(2)]
    if result.get("requests") == 0:  # wrk prints 0.00us percentiles when nothing completed
        for key in [key for key in result if re.fullmatch(r"p\d+", key)]:
            result[key] = None
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                      text)
    if match:
        result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                           map(int, match.groups())))
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if match:
        result["non_2xx"] = int(match.group(1))
    result["errors"] = result["non_2xx"] + sum(result["socket_errors"].values())
    return result

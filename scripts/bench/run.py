"""Benchmark hio_http against other WSGI servers: `python scripts/bench/run.py [--quick]`.

Each server runs pinned to core 0, wrk (and every helper client) to core 1, all on 127.0.0.1.
Writes results.md, results.json and results.png into --out (default scripts/bench/out/).
See scripts/bench/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402

MIB = 1024 * 1024
# A server's version (argv[1]: its venv's name); for hio_http also its build, compiled or pure.
VERSION_PROBE = """
import importlib.metadata, importlib.util, sys
name = "hio_http" if sys.argv[1].startswith("hio_http") else sys.argv[1]
version = importlib.metadata.version(name)
if name == "hio_http":
    origin = importlib.util.find_spec("hio_http.stewarding").origin
    version += " (pure)" if origin.endswith(".py") else " (compiled)"
print(version)
"""
UPLOAD_BYTES = 1 * MIB
DOWNLOAD_BYTES = 10 * MIB


@dataclasses.dataclass
class Case:
    key: str
    title: str
    kind: str = "wrk"  # wrk | idle_cpu | idle | sse | probe
    path: str = "/hello"
    connections: int = 10
    headers: tuple = ()
    script: Optional[str] = None  # a Lua script in the out directory
    transfer: int = 0  # bytes per request: report MiB/s
    download: bool = False  # measured by clients.py download (MiB/s that arrived), not wrk
    count: int = 0  # idle connections or SSE subscribers
    only: Optional[tuple] = None  # servers this case applies to (None: all)
    fresh: bool = False  # on a newly started server (memory figures unskewed by earlier cases)


BLOCKING = ("hio_http", "hio_http threads=4", "waitress-4", "gunicorn-gthread-4", "granian-4")

CASES = [
    Case("hello_c1", "hello keep-alive, c=1", connections=1),
    Case("hello_c10", "hello keep-alive, c=10", connections=10),
    Case("hello_c100", "hello keep-alive, c=100", connections=100),
    Case("close_c10", "hello Connection: close, c=10", headers=("Connection: close",)),
    Case("json_c10", "Falcon JSON keep-alive, c=10", path="/json"),
    Case("block_c10", "20 ms blocking app, c=10", path="/block?ms=20", only=BLOCKING),
    Case("block_probe", "/hello on another connection while /block?ms=2000 runs",
         kind="probe", only=BLOCKING),
    Case("upload", "1 MiB POST upload, c=4", path="/upload", connections=4,
         script="post.lua", transfer=UPLOAD_BYTES),
    Case("download", "10 MiB download (wsgi.file_wrapper), c=4", path="/download",
         connections=4, transfer=DOWNLOAD_BYTES, download=True),
    Case("idle_cpu", "idle CPU, no connections", kind="idle_cpu"),
    Case("idle_1k", "1,000 idle keep-alive connections", kind="idle", count=1000,
         fresh=True),
    Case("sse_1k", "1,000 SSE subscribers, broadcast", kind="sse", count=1000,
         only=("hio_http", "hio_http threads=4"), fresh=True),
    Case("idle_10k", "10,000 idle keep-alive connections", kind="idle", count=10000,
         fresh=True),
]

# warm-up s, measured s, repetitions, idle window s, open deadline s, batch timeout s, probe s,
# extra wrk runs allowed per case when another process disturbed one
PROFILES = {
    "full": (2, 5, 3, 5.0, 60.0, 5.0, 5.0, 2),
    "quick": (1, 1, 1, 2.0, 15.0, 2.0, 2.0, 1),
}


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.logs = self.out / "logs"
        self.venvs = Path(args.venvs).resolve()
        for folder in (self.out, self.logs, self.venvs):
            folder.mkdir(parents=True, exist_ok=True)
        (warmup, duration, reps, window, self.deadline, self.batch_timeout,
         self.probe_timeout, self.max_retries) = PROFILES["quick" if args.quick else "full"]
        self.warmup = args.warmup if args.warmup is not None else warmup
        self.duration = args.duration if args.duration is not None else duration
        self.reps = args.reps if args.reps is not None else reps
        self.rounds = args.rounds
        self.window = args.window if args.window is not None else window
        self.budget = args.budget or (420.0 if args.quick else 1800.0)
        self.started = None
        self.load_before = _loadavg()
        self.results: list = []
        self.server_info: dict = {}
        self.download_file = self.out / "download.bin"
        self.post_script = self.out / "post.lua"

    # -- setup ---------------------------------------------------------------------------

    def prepare_files(self) -> None:
        if not (self.download_file.exists()
                and self.download_file.stat().st_size == DOWNLOAD_BYTES):
            self.download_file.write_bytes(os.urandom(DOWNLOAD_BYTES))
        self.post_script.write_text(
            "-- 1 MiB POST body for the upload case\n"
            'wrk.method = "POST"\n'
            f'wrk.body = string.rep("x", {UPLOAD_BYTES})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n')

    def selected_servers(self) -> list:
        names = self.args.only.split(",") if self.args.only else None
        chosen = [spec for spec in servers.SERVERS if names is None or spec.name in names]
        # hio_http and the references first: if the time budget runs out, the ratios remain.
        first = ("hio_http",) + servers.REFERENCES
        chosen.sort(key=lambda spec: (spec.name not in first, first.index(spec.name)
                                      if spec.name in first else 0))
        if names:
            unknown = set(names) - {spec.name for spec in servers.SERVERS}
            if unknown:
                raise SystemExit(f"unknown servers: {', '.join(sorted(unknown))}; known: "
                                 + ", ".join(spec.name for spec in servers.SERVERS))
        return chosen

    def selected_cases(self, spec) -> list:
        keys = self.args.cases.split(",") if self.args.cases else None
        cases = []
        for case in CASES:
            if keys is not None and case.key not in keys:
                continue
            if spec.cases is not None and case.key not in spec.cases:
                continue
            if case.only is not None and spec.name not in case.only:
                continue
            cases.append(case)
        return cases

    def install(self, specs) -> dict:
        """bin directory per server name, or an InstallError text."""
        bins = {}
        for spec in specs:
            try:
                bins[spec.name] = servers.ensure_venv(spec, self.venvs, self.logs, progress,
                                                      self.args.hio_http_python,
                                                      baseline=self.args.baseline)
                version = subprocess.run(
                    [str(bins[spec.name] / "python"), "-c", VERSION_PROBE, spec.venv],
                    capture_output=True, text=True, timeout=60, cwd=HERE).stdout.strip()
                self.server_info[spec.name] = {"status": "installed", "version": version,
                                               "note": spec.note}
            except (servers.InstallError, OSError, subprocess.SubprocessError) as ex:
                reason = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
                bins[spec.name] = None
                self.server_info[spec.name] = {"status": f"not installed: {reason}",
                                               "note": spec.note}
                progress(f"{spec.name}: not installed: {reason}")
        return bins

    # -- one server ----------------------------------------------------------------------

    def start_server(self, spec, bin_dir: Path, publisher: bool = True):
        """Start the server on a free port; (process, port, UDP port of its SSE publisher)."""
        port = harness.free_port()
        udp_port = harness.free_port(socket.SOCK_DGRAM)
        env = dict(os.environ, PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1",
                   PYTHONDONTWRITEBYTECODE="1", BENCH_DOWNLOAD_FILE=str(self.download_file),
                   **spec.env)
        env.pop("VIRTUAL_ENV", None)
        env.pop("BENCH_SSE_UDP_PORT", None)
        if publisher:
            env["BENCH_SSE_UDP_PORT"] = str(udp_port)
        log = self.logs / f"server-{_slug(spec.name)}.log"
        argv = harness.pinned(harness.SERVER_CORE, spec.command(bin_dir, port))
        with open(log, "a") as handle:
            handle.write(f"\n=== {datetime.datetime.now().isoformat()} {' '.join(argv)}\n")
        start = log.stat().st_size
        process = harness.spawn(argv, HERE, env, log)
        problem = harness.wait_ready(process, port)
        if problem is not None:
            harness.stop(process)
            tail = _tail(log, start)
            raise RuntimeError(problem + (f" [{tail}]" if tail else ""))
        return process, port, udp_port

    def run_server(self, spec, bin_dir: Optional[Path]) -> None:
        cases = self.selected_cases(spec)
        if not cases:
            return
        info = self.server_info[spec.name]
        if bin_dir is None:
            for case in cases:
                self.record(spec, case, status=info["status"])
            return
        progress(f"== {spec.name}")
        process = None
        try:
            for case in cases:
                if self.over_budget():
                    self.record(spec, case, status="skipped: time budget exhausted")
                    continue
                if case.fresh and process is not None and process.poll() is None:
                    harness.stop(process)
                    process = None
                if process is None or process.poll() is not None:
                    if process is not None:
                        info.setdefault("restarts", []).append(
                            f"died (status {process.returncode}) before {case.key}")
                        progress(f"{spec.name} died (status {process.returncode}); restarting")
                    try:
                        process, port, udp_port = self.start_server(spec, bin_dir)
                    except RuntimeError as ex:
                        info["status"] = f"does not start: {ex}"
                        progress(f"{spec.name}: {ex}")
                        for rest in cases[cases.index(case):]:
                            self.record(spec, rest, status=info["status"])
                        return
                    info["status"] = "ran"
                try:
                    self.run_case(spec, case, process, port, udp_port)
                except Exception as ex:  # one case failing must not stop the run
                    self.record(spec, case, status=f"error: {type(ex).__name__}: {ex}")
                    progress(f"{spec.name} {case.key}: error {ex}")
                if process.poll() is not None:
                    self.results[-1]["note"] = (self.results[-1].get("note", "") +
                                                f" server exited (status {process.returncode})")
        finally:
            if process is not None:
                harness.stop(process)

    def run_case(self, spec, case: Case, process, port: int, udp_port: int) -> None:
        leader = process.pid
        if case.kind == "wrk" and case.download:
            self.run_download_case(spec, case, leader, port)
        elif case.kind == "wrk":
            self.run_wrk_case(spec, case, leader, port)
        elif case.kind == "idle_cpu":
            time.sleep(0.5)  # let the previous case's connections close
            cpu = harness.cpu_percent_over(leader, self.window)
            self.record(spec, case, cpu_pct=cpu, rss_kib=harness.memory_kib(leader))
            progress(f"{spec.name} {case.key}: {cpu:.2f} % CPU")
        elif case.kind == "idle":
            self.run_idle_case(spec, case, leader, port)
        elif case.kind == "sse":
            self.run_sse_case(spec, case, leader, port, udp_port)
        elif case.kind == "probe":
            self.run_probe_case(spec, case, port)

    def run_wrk_case(self, spec, case: Case, leader: int, port: int) -> None:
        url = f"http://127.0.0.1:{port}{case.path}"
        script = self.out / case.script if case.script else None
        options = dict(script=script, headers=case.headers)
        if self.warmup > 0:
            harness.run_wrk(url, case.connections, self.warmup, **options)
        runs = []
        retries = 0
        for _ in range(self.reps):
            run = harness.run_wrk(url, case.connections, self.duration, server=leader, **options)
            # Another process took one of the two cores: measure again (a bounded number of
            # times) and keep the least disturbed run.
            while _disturbance(run) > DISTURBED and retries < self.max_retries:
                retries += 1
                again = harness.run_wrk(url, case.connections, self.duration, server=leader,
                                        **options)
                run = min(run, again, key=_disturbance)
            if run.get("cpu_pct") is not None and run.get("rps"):
                run["cpu_us"] = run["cpu_pct"] * 1e4 / run["rps"]  # server CPU per request
            runs.append(run)
        (self.logs / f"wrk-{_slug(spec.name)}-{case.key}.txt").write_text(
            "\n".join(run["raw"] for run in runs))
        figures = {"rps": _median(runs, "rps"), "p50": _median(runs, "p50"),
                   "p99": _median(runs, "p99"), "errors": sum(run["errors"] for run in runs),
                   "requests": sum(run.get("requests", 0) for run in runs),
                   "rps_runs": [run.get("rps") for run in runs],
                   "socket_errors": _sum_dicts(run["socket_errors"] for run in runs),
                   "non_2xx": sum(run["non_2xx"] for run in runs),
                   "cpu_pct": _median(runs, "cpu_pct"), "cpu_us": _median(runs, "cpu_us"),
                   "core_other_pct": _median(runs, "server_other_pct"),
                   "client_other_pct": _median(runs, "client_other_pct"), "retries": retries,
                   "rss_kib": harness.memory_kib(leader),
                   "peak_rss_kib": harness.memory_kib(leader, "VmHWM")}
        if case.transfer and figures["rps"] is not None:  # wrk does not count bytes sent
            figures["mib_s"] = figures["rps"] * case.transfer / MIB
        self.record(spec, case, **figures)
        rate = (f"{figures['mib_s']:.1f} MiB/s" if "mib_s" in figures
                else f"{figures['rps'] or 0:,.0f} req/s")
        progress(f"{spec.name} {case.key}: {rate}, p99 {_ms(figures['p99'])}, "
                 f"errors {figures['errors']}")

    def run_download_case(self, spec, case: Case, leader: int, port: int) -> None:
        """Downloads measured by clients.py (bodies discarded in the kernel), since wrk copies
        every byte it reads and its one core, not the server, would set the pace."""
        runs = []
        retries = 0
        for index in range(self.reps):
            run = self.download_once(case, leader, port, self.warmup if index == 0 else 0.5)
            while _disturbance(run) > DISTURBED and retries < self.max_retries:
                retries += 1
                again = self.download_once(case, leader, port, 0.5)
                run = min(run, again, key=_disturbance)
            runs.append(run)
        (self.logs / f"download-{_slug(spec.name)}.json").write_text(json.dumps(runs, indent=1))
        figures = {"mib_s": (_median(runs, "bytes_per_s") or 0) / MIB,
                   "rps": _median(runs, "responses_per_s"),
                   "errors": sum(run["errors"] for run in runs),
                   "requests": sum(run["responses"] for run in runs),
                   "first_errors": [e for run in runs for e in run["first_errors"]][:3],
                   "cpu_pct": _median(runs, "cpu_pct"),
                   "core_other_pct": _median(runs, "server_other_pct"),
                   "client_other_pct": _median(runs, "client_other_pct"), "retries": retries,
                   "rss_kib": harness.memory_kib(leader),
                   "peak_rss_kib": harness.memory_kib(leader, "VmHWM")}
        self.record(spec, case, **figures)
        progress(f"{spec.name} {case.key}: {figures['mib_s']:.1f} MiB/s, "
                 f"errors {figures['errors']}")

    def download_once(self, case: Case, leader: int, port: int, warmup: float) -> dict:
        """One clients.py download run, with the server's CPU and what else ran on each core."""
        server_before = harness.cpu_seconds(leader)
        server_core_before = harness.core_busy_seconds(harness.SERVER_CORE)
        client_core_before = harness.core_busy_seconds(harness.CLIENT_CORE)
        started = time.monotonic()
        client = self.helper(["download", "--port", str(port), "--connections",
                              str(case.connections), "--warmup", str(warmup),
                              "--seconds", str(self.duration)])
        try:
            run = _read_json(client, warmup + self.duration + 30)
        finally:
            _finish_helper(client)
        wall = time.monotonic() - started
        used = harness.cpu_seconds(leader) - server_before
        run["responses_per_s"] = run["responses"] / run["seconds"]
        run["cpu_pct"] = 100.0 * used / wall
        run["server_other_pct"] = max(0.0, 100.0 * (harness.core_busy_seconds(
            harness.SERVER_CORE) - server_core_before - used) / wall)
        other = (harness.core_busy_seconds(harness.CLIENT_CORE) - client_core_before
                 - run["cpu_s"])
        run["client_other_pct"] = max(0.0, 100.0 * other / wall)
        return run

    def helper(self, argv: list) -> subprocess.Popen:
        command = harness.pinned(harness.CLIENT_CORE, [sys.executable, str(HERE / "clients.py"),
                                                       *argv])
        return harness.spawn(command, HERE, dict(os.environ), self.logs / "clients.log",
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run_idle_case(self, spec, case: Case, leader: int, port: int) -> None:
        smaller = [row for row in self.results if row["server"] == spec.name
                   and row["kind"] == "idle" and row.get("held") is not None
                   and row["held"] < row["wanted"] < case.count]
        if smaller:  # it stopped short of a smaller count: it will stop there again
            row = smaller[-1]
            self.record(spec, case, held=row["held"], wanted=case.count,
                        stopped=f"not rerun: stopped at {row['held']:,} of {row['wanted']:,} "
                                f"already ({row['stopped']})")
            progress(f"{spec.name} {case.key}: not rerun, stopped at {row['held']} already")
            return
        time.sleep(0.5)
        rss_before = harness.memory_kib(leader)
        client = self.helper(["idle", "--port", str(port), "--count", str(case.count),
                              "--deadline", str(self.deadline),
                              "--batch-timeout", str(self.batch_timeout)])
        try:
            opened = _read_json(client, self.deadline + 30)
            held = opened["held"]
            rss_after = harness.memory_kib(leader)
            cpu = harness.cpu_percent_over(leader, self.window)
            try:
                probe_ms = harness.request_once(port, timeout=self.probe_timeout) * 1000
                probe_error = None
            except (OSError, ValueError) as ex:
                probe_ms = None
                probe_error = f"{str(ex) or type(ex).__name__} ({self.probe_timeout:g} s)"
        finally:
            _finish_helper(client)
        per_connection = (rss_after - rss_before) / held if held else None
        self.record(spec, case, held=held, wanted=case.count, stopped=opened["stopped"],
                    open_seconds=opened["open_seconds"], rss_before_kib=rss_before,
                    rss_kib=rss_after, kib_per_conn=per_connection, cpu_pct=cpu,
                    probe_ms=probe_ms, probe_error=probe_error)
        progress(f"{spec.name} {case.key}: held {held}/{case.count}"
                 + (f" (stopped: {opened['stopped']})" if opened["stopped"] else "")
                 + (f", {per_connection:.1f} KiB/conn" if per_connection is not None else "")
                 + f", {cpu:.2f} % CPU, probe "
                 + (f"{probe_ms:.1f} ms" if probe_ms is not None else f"failed ({probe_error})"))
        time.sleep(1.0)  # the server notices the closes before the next case

    def run_probe_case(self, spec, case: Case, port: int) -> None:
        """How long /hello takes on fresh connections while one request spends 2 s in the app:
        is one slow call holding everyone else?"""
        time.sleep(0.5)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            slow.sendall(b"GET /block?ms=2000 HTTP/1.1\r\nHost: bench\r\n\r\n")
            time.sleep(0.2)  # the slow call is under way
            latencies = []
            for _ in range(8):
                latencies.append(harness.request_once(port, "/hello", timeout=10))
                time.sleep(0.1)
            slow.settimeout(10)
            answered = slow.recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            slow.close()
        figures = {"probe_max_ms": max(latencies) * 1000,
                   "probe_median_ms": statistics.median(latencies) * 1000,
                   "slow_answered": answered}
        self.record(spec, case, **figures)
        progress(f"{spec.name} {case.key}: /hello in {figures['probe_median_ms']:.1f} ms "
                 f"(median), {figures['probe_max_ms']:.1f} ms (max) during a 2 s call")

    def run_sse_case(self, spec, case: Case, leader: int, port: int, udp_port: int) -> None:
        time.sleep(0.5)
        rss_before = harness.memory_kib(leader)
        rounds = 5 if self.args.quick else 20
        client = self.helper(["sse", "--port", str(port), "--count", str(case.count),
                              "--udp-port", str(udp_port), "--rounds", str(rounds),
                              "--deadline", str(self.deadline),
                              "--batch-timeout", str(self.batch_timeout)])
        try:
            opened = _read_json(client, self.deadline + 30)
            held = opened["held"]
            rss_after = harness.memory_kib(leader)
            cpu = harness.cpu_percent_over(leader, self.window)
            outcome = None
            if held:
                client.stdin.write("go\n")
                client.stdin.flush()
                outcome = _read_json(client, 10.0 * (rounds + 2) + 30)
        finally:
            _finish_helper(client)
        figures = dict(held=held, wanted=case.count, stopped=opened["stopped"],
                       rss_before_kib=rss_before, rss_kib=rss_after, cpu_pct=cpu,
                       kib_per_conn=(rss_after - rss_before) / held if held else None)
        if outcome:
            timed = [r for r in outcome["rounds"] if "last_ms" in r]
            figures.update(
                broadcast_median_ms=statistics.median(r["median_ms"] for r in timed) if timed else None,
                broadcast_last_ms=statistics.median(r["last_ms"] for r in timed) if timed else None,
                broadcast_lost=sum(r["lost"] + r["timed_out"] for r in outcome["rounds"]),
                rounds=outcome["rounds"], burst=outcome["burst"])
            burst = outcome["burst"]
            if burst.get("last_ms"):
                figures["burst_deliveries_s"] = (burst["delivered"] * burst["events"]
                                                 / (burst["last_ms"] / 1000))
        self.record(spec, case, **figures)
        progress(f"{spec.name} {case.key}: {held} subscribers, CPU {cpu:.2f} %, broadcast to all "
                 f"in {_ms_value(figures.get('broadcast_last_ms'))}, burst "
                 f"{figures.get('burst_deliveries_s', 0):,.0f} deliveries/s")
        time.sleep(1.0)

    # -- bookkeeping ---------------------------------------------------------------------

    def record(self, spec, case: Case, status: str = "ok", **figures) -> None:
        self.results.append({"server": spec.name, "case": case.key, "title": case.title,
                             "kind": case.kind, "status": status, **figures})

    def over_budget(self) -> bool:
        return self.started is not None and time.monotonic() - self.started > self.budget

    def write(self) -> None:
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                "mode": "quick" if self.args.quick else "full",
                "warmup_s": self.warmup, "duration_s": self.duration,
                "repetitions": self.reps * self.rounds, "rounds": self.rounds,
                "idle_window_s": self.window, "cpu": _cpu_model(), "kernel": platform.release(),
                "python": platform.python_version(), "wrk": _wrk_version(),
                "server_core": harness.SERVER_CORE, "client_core": harness.CLIENT_CORE,
                "elapsed_s": round(time.monotonic() - self.started, 1) if self.started else None,
                "loadavg_before": self.load_before, "loadavg_after": _loadavg(),
                "references": list(servers.REFERENCES),
                "cases": [dataclasses.asdict(case) for case in CASES]}
        order = [spec.name for spec in servers.SERVERS]
        self.results.sort(key=lambda row: order.index(row["server"]))  # stable: cases keep order
        info = {name: self.server_info[name] for name in order if name in self.server_info}
        data = {"meta": meta, "servers": info, "results": self.results}
        (self.out / "results.json").write_text(json.dumps(data, indent=1))
        (self.out / "results.md").write_text(report.markdown(data))
        progress(f"wrote {self.out / 'results.md'} and results.json")
        if not self.args.no_plot:
            problem = self.plot()
            if problem:
                progress(f"results.png not written: {problem}")
            else:
                progress(f"wrote {self.out / 'results.png'}")

    def plot(self) -> Optional[str]:
        """Draw results.png with matplotlib from a tools venv of its own (created once)."""
        tools = self.venvs / "tools"
        python = tools / "bin" / "python"
        try:
            if not (tools / ".bench-installed").exists():
                progress("installing matplotlib into the tools venv")
                import venv
                venv.EnvBuilder(with_pip=True, clear=True).create(tools)
                subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                                "--disable-pip-version-check", "matplotlib"], check=True,
                               capture_output=True, timeout=900)
                (tools / ".bench-installed").write_text("matplotlib")
            result = subprocess.run([str(python), str(HERE / "plot.py"),
                                     str(self.out / "results.json"),
                                     str(self.out / "results.png")],
                                    capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as ex:
            return str(ex)
        return result.stderr.strip()[-300:] if result.returncode else None

    # -- the profile ---------------------------------------------------------------------

    def profile(self, bin_dir: Path, seconds: int = 10) -> None:
        """py-spy over hio_http serving hello keep-alive at c=10; writes profile.md (own and
        total time per function, from a sampling run that pauses the process for each sample
        and from one that does not) and profile.svg (a flame graph)."""
        import profile_summary
        spec = servers.find("hio_http")
        # No SSE publisher thread: blocked in recvfrom, py-spy would still count it as busy.
        process, port, _ = self.start_server(spec, bin_dir, publisher=False)
        runs = [("blocking", "raw", []), ("nonblocking", "raw", ["--nonblocking"]),
                ("flamegraph", "flamegraph", [])]
        sections = []
        try:
            url = f"http://127.0.0.1:{port}/hello"
            harness.run_wrk(url, 10, 2)
            unprofiled = harness.run_wrk(url, 10, 5)
            for label, form, extra in runs:
                output = self.out / ("profile.svg" if form == "flamegraph"
                                     else f"profile.{label}.txt")
                with open(self.logs / "py-spy.log", "a") as log:
                    spy = subprocess.Popen(harness.pinned(harness.CLIENT_CORE, [
                        str(bin_dir / "py-spy"), "record", "--pid", str(process.pid),
                        "--duration", str(seconds), "--rate", "200", "--format", form,
                        "--output", str(output), *extra]), stdout=log, stderr=log)
                time.sleep(0.5)
                loaded = harness.run_wrk(url, 10, seconds - 1)
                spy.wait(timeout=seconds + 30)
                progress(f"profiled ({label}) at {loaded.get('rps', 0):,.0f} req/s")
                if form == "raw" and output.exists():
                    sections.append(f"## py-spy record ({label} sampling), "
                                    f"{loaded.get('rps', 0):,.0f} req/s while sampled\n\n"
                                    + profile_summary.summarise(output.read_text()))
        finally:
            harness.stop(process)
        text = ("# Profile: hio_http, hello keep-alive, c=10\n\n"
                f"Without the profiler: {unprofiled.get('rps', 0):,.0f} req/s. Own time is "
                "where the interpreter was when sampled; a C call (a socket syscall) counts as "
                "the Python line that made it.\n\n" + "\n".join(sections))
        (self.out / "profile.md").write_text(text)
        progress(f"wrote {self.out / 'profile.md'} and profile.svg")
        print(text)


DISTURBED = 10.0  # % of a core taken by something else during a run: measure it again


# Figures of a case that add up over rounds; the others take the median of the rounds.
SUMMED = ("errors", "requests", "non_2xx", "retries", "responses", "broadcast_lost")


def merge_rounds(rows: list) -> list:
    """One row per (server, case): a case measured in several rounds keeps the median of each
    figure (sums for counts, lists joined), and the first status that was not "ok"."""
    merged: dict = {}
    for row in rows:
        merged.setdefault((row["server"], row["case"]), []).append(row)
    return [_merge(group) if len(group) > 1 else group[0] for group in merged.values()]


def _merge(group: list) -> dict:
    row = dict(group[0], rounds=len(group))
    row["status"] = next((r["status"] for r in group if r["status"] != "ok"), "ok")
    for key in {key for r in group for key in r} - {"server", "case", "title", "kind", "status"}:
        values = [r[key] for r in group if r.get(key) is not None]
        if not values:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            row[key] = sum(values) if key in SUMMED else statistics.median(values)
        elif all(isinstance(v, list) for v in values):
            row[key] = [item for v in values for item in v]
        elif all(isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values())
                 for v in values):
            row[key] = _sum_dicts(values)
    return row


def _disturbance(run: dict) -> float:
    return max(run.get("client_other_pct") or 0.0, run.get("server_other_pct") or 0.0)


def _median(runs: list, key: str):
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def _sum_dicts(dicts) -> dict:
    total: dict = {}
    for item in dicts:
        for key, value in item.items():
            total[key] = total.get(key, 0) + value
    return total


def _read_json(process: subprocess.Popen, timeout: float) -> dict:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError(f"helper gave no answer within {timeout:.0f} s "
                           f"(exit status {process.poll()})")
    return json.loads(line)


def _finish_helper(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()
        process.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass
    harness.stop(process, grace=2.0)


def _tail(log: Path, start: int, lines: int = 3) -> str:
    """The last lines written to `log` after offset `start`, on one line."""
    try:
        with open(log, "rb") as handle:
            handle.seek(start)
            text = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return " / ".join([line.strip() for line in text if line.strip()][-lines:])[-300:]


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def _ms(seconds) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.2f} ms"


def _ms_value(ms) -> str:
    return "—" if ms is None else f"{ms:.1f} ms"


def _loadavg() -> str:
    """1, 5 and 15 minute load averages: other work on the machine shows up here."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _wrk_version() -> str:
    try:
        result = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        return (result.stdout + result.stderr).split("Copyright")[0].strip()
    except OSError:
        return "missing"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 repetition, shorter runs (about 5 minutes once installed)")
    parser.add_argument("--out", default=str(HERE / "out"), help="results directory")
    parser.add_argument("--venvs", default=str(HERE / "out" / "venvs"),
                        help="where the servers' virtualenvs live (kept between runs)")
    parser.add_argument("--only", help="comma-separated server names (see servers.py)")
    parser.add_argument("--cases", help="comma-separated case keys: "
                        + ",".join(case.key for case in CASES))
    parser.add_argument("--duration", type=int, help="seconds per measured wrk run")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per case (0: none)")
    parser.add_argument("--reps", type=int, help="measured repetitions per case")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every server's cases this many times over, servers taking "
                             "turns (who goes first rotates); each figure is the median of all "
                             "rounds, so a slow spell of the machine hits every server alike")
    parser.add_argument("--window", type=float, help="seconds over which idle CPU is measured")
    parser.add_argument("--budget", type=float,
                        help="seconds after which the remaining cases are skipped "
                             "(default 300 quick, 1800 full; installs not counted)")
    parser.add_argument("--hio-http-python",
                        help="run hio_http with this interpreter (already has it installed) "
                             "instead of its venv: no install, no network")
    parser.add_argument("--baseline", default="HEAD",
                        help=f"git revision installed as {servers.BASELINE!r}")
    parser.add_argument("--no-plot", action="store_true", help="skip results.png")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the benchmark: py-spy profile of hio_http, hello c=10")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    for tool in ("wrk", "taskset"):
        if not any((Path(folder) / tool).exists() for folder in os.environ["PATH"].split(":")):
            raise SystemExit(f"{tool} is needed on PATH")
    signal.signal(signal.SIGTERM, _interrupted)
    bench = Bench(args)
    bench.prepare_files()
    try:
        if args.profile:
            bins = bench.install([servers.find("hio_http")])
            if bins["hio_http"] is None:
                raise SystemExit(bench.server_info["hio_http"]["status"])
            bench.profile(bins["hio_http"])
            return 0
        specs = bench.selected_servers()
        bins = bench.install(specs)
        bench.started = time.monotonic()
        progress(f"benchmark: {len(specs)} servers, warm-up {bench.warmup} s, "
                 f"{bench.reps} x {bench.duration} s per case, budget {bench.budget:.0f} s")
        for turn in range(bench.rounds):
            if bench.rounds > 1:
                progress(f"round {turn + 1} of {bench.rounds}")
            first = turn % len(specs) if specs else 0
            for spec in specs[first:] + specs[:first]:
                bench.run_server(spec, bins[spec.name])
        bench.results = merge_rounds(bench.results)
        bench.write()
    except KeyboardInterrupt:
        progress("interrupted: stopping servers, writing what was measured")
        if bench.results:
            bench.write()
        return 130
    finally:
        harness.stop_all()
    return 0


def _interrupted(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())

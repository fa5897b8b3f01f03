"""What `--metrics-bind` costs on hello world: two hio-http processes pinned to core 0, one with
metrics and one without, and wrk (c=10) pinned to core 1 against each in turn, in pairs. Each
pair gives the ratio of the server CPU time per request (from /proc), which other work on the
machine disturbs much less than requests per second; the median ratio is printed.

    python scripts/bench/metrics_cost.py --pairs 20
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

APP = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, world!"]
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, port: int, seconds: int) -> float:
    """Server CPU microseconds per request over one wrk run."""
    before = cpu_seconds(pid)
    output = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c10", f"-d{seconds}s",
                             f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                            check=True).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return (cpu_seconds(pid) - before) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=2, help="per wrk run")
    parser.add_argument("--python", default=sys.executable, help="an interpreter with hio_http")
    options = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("needs wrk and taskset", file=sys.stderr)
        return 2
    servers = {}
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "helloapp.py"), "w") as file:
            file.write(APP)
        try:
            for mode, extra in (("off", []), ("on", ["--metrics-bind", "127.0.0.1:0"])):
                port = free_port()
                process = subprocess.Popen(
                    ["taskset", "-c", "0", options.python, "-m", "hio_http", "--bind",
                     f"127.0.0.1:{port}", "--log-level", "warning", *extra, "helloapp:app"],
                    cwd=directory)
                servers[mode] = (process, port)
            time.sleep(2)
            ratios = []
            for turn in range(options.pairs):
                order = ("off", "on") if turn % 2 == 0 else ("on", "off")
                cost = {mode: measure(servers[mode][0].pid, servers[mode][1], options.seconds)
                        for mode in order}
                ratios.append(cost["on"] / cost["off"])
                print(f"pair {turn + 1}: {cost['off']:.1f} us without, {cost['on']:.1f} us "
                      f"with metrics: {ratios[-1]:.3f}", flush=True)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(10)
    print(f"CPU per request with metrics / without: median {statistics.median(ratios):.3f}, "
          f"geometric mean {statistics.geometric_mean(ratios):.3f} ({len(ratios)} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

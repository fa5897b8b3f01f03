"""Client streaming benchmark: `python scripts/bench/client_streams.py [--size-mib 1024]`.

Starts a hio_http server in a child process (pinned to core 0 when `taskset` exists) and, from
this process (core 1), measures in one run:

1. uploading and downloading --size-mib through hio_http's Client and through urllib3 (both
   streaming, neither holding the body): MiB/s, their ratio, how much this process's RSS grew
   meanwhile, and the CPU each transfer cost the client and the server. Downloads are measured
   twice: from a Falcon generator (the server's Python and its copies bind the rate) and from
   a file the server sends by sendfile (cheaper for the server than for either client, so the
   clients' own cost binds it);
2. --streams concurrent streamed downloads from one process (one Client per connection, one
   Poller): all must complete; RSS growth against connections x high_water;
3. with wrk, a Falcon app's 10 KiB JSON at c=10 with `Accept-Encoding: gzip` against the same
   without it: requests/s and bytes per response, both as ratios.

Everything runs on 127.0.0.1; ports come from binding port 0. Prints a table and writes JSON to
--out when given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
BLOCK = 256 * 1024


# -- the server (child process) ---------------------------------------------------------------

def serve(args) -> None:
    sys.path.insert(0, str(ROOT))
    import falcon

    from hio_http import Doist, Server, ServerDoer
    from hio_http.tuning import keep_freed_memory

    block = bytes(range(256)) * (BLOCK // 256)
    document = {"items": [{"id": i, "name": f"item number {i}", "price": i * 1.25,
                           "tags": ["alpha", "beta"]} for i in range(140)]}

    class Download:
        def on_get(self, req, resp):
            size = int(req.get_param("size") or 0)
            resp.content_type = "application/octet-stream"
            resp.content_length = size
            resp.stream = (block[:min(BLOCK, size - sent)] for sent in range(0, size, BLOCK))

    class Upload:
        def on_post(self, req, resp):
            total = 0
            while piece := req.bounded_stream.read(BLOCK):
                total += len(piece)
            resp.media = {"size": total}

    class Document:
        def on_get(self, req, resp):
            resp.media = document

    class File:
        def on_get(self, req, resp):
            resp.content_type = "application/octet-stream"
            resp.content_length = os.path.getsize(args.file)
            resp.stream = open(args.file, "rb")  # Falcon hands it to wsgi.file_wrapper

    app = falcon.App()
    app.add_route("/download", Download())
    app.add_route("/upload", Upload())
    app.add_route("/json", Document())
    if args.file:
        app.add_route("/file", File())
    _raise_file_limit()
    keep_freed_memory()  # as the command line does
    server = Server(app, host="127.0.0.1", port=args.port, compress=True, max_body=1 << 40,
                    max_connections=args.streams + 100, backlog=4096)
    server.open()
    print(json.dumps({"port": server.address[1]}), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # a benchmark server: no cleanup
    Doist(tock=0.0, real=True, doers=[ServerDoer(server)]).do()


# -- measuring (this process) -----------------------------------------------------------------

def cpu_seconds() -> float:
    """This process's CPU time, user and system: what a transfer cost the client, which
    unlike its rate hardly depends on what else the machine runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """The highest RSS seen above the baseline taken when made, read once per SAMPLE_EVERY
    bytes moved: reading /proc costs the same for both clients however they cut the body."""

    SAMPLE_EVERY = 4 * MIB

    def __init__(self):
        self.base = rss()
        self.top = self.base
        self.moved = 0
        self.next_sample = self.SAMPLE_EVERY

    def sample(self, size: int) -> None:
        self.moved += size
        if self.moved >= self.next_sample:
            self.next_sample += self.SAMPLE_EVERY
            self.top = max(self.top, rss())

    @property
    def growth(self) -> int:
        return max(self.top, rss()) - self.base


def blocks(size: int, peak: Peak):
    block = b"u" * BLOCK
    for _ in range(size // BLOCK):
        peak.sample(BLOCK)
        yield block


def hio_file_download(url: str, size: int) -> tuple[float, int]:
    return hio_download(url, size, "/file")


def urllib3_file_download(url: str, size: int) -> tuple[float, int]:
    return urllib3_download(url, size, "/file")


def hio_upload(url: str, size: int) -> tuple[float, int]:
    from hio_http.clienting import Client
    peak = Peak()
    client = Client(url, timeout=120)
    started = time.perf_counter()
    response = client.post("/upload", body=blocks(size, peak))
    client.run_until(response, timeout=600)
    elapsed = time.perf_counter() - started
    client.close()
    assert response.error is None and response.json()["size"] == size, response
    return size / elapsed / MIB, peak.growth


def hio_download(url: str, size: int, path: str = "") -> tuple[float, int]:
    from hio_http.clienting import Client
    peak = Peak()
    client = Client(url, timeout=120)
    received = [0]

    def count(data: bytes) -> None:
        received[0] += len(data)
        peak.sample(len(data))

    started = time.perf_counter()
    response = client.get(path or f"/download?size={size}", on_data=count)
    client.run_until(response, timeout=600)
    elapsed = time.perf_counter() - started
    client.close()
    assert response.error is None and received[0] == size, response
    return size / elapsed / MIB, peak.growth


def urllib3_upload(url: str, size: int) -> tuple[float, int]:
    import urllib3
    peak = Peak()
    pool = urllib3.PoolManager()
    started = time.perf_counter()
    response = pool.request("POST", url + "/upload", body=blocks(size, peak), chunked=True,
                            preload_content=True)
    elapsed = time.perf_counter() - started
    assert json.loads(response.data)["size"] == size
    pool.clear()
    return size / elapsed / MIB, peak.growth


def urllib3_download(url: str, size: int, path: str = "") -> tuple[float, int]:
    import urllib3
    peak = Peak()
    pool = urllib3.PoolManager()
    started = time.perf_counter()
    response = pool.request("GET", url + (path or f"/download?size={size}"),
                            preload_content=False)
    received = 0
    for piece in response.stream(BLOCK):
        received += len(piece)
        peak.sample(len(piece))
    elapsed = time.perf_counter() - started
    response.release_conn()
    pool.clear()
    assert received == size
    return size / elapsed / MIB, peak.growth


def concurrent_downloads(url: str, count: int, size: int, high_water: int) -> dict:
    from hio_http.clienting import Client
    from hio_http.polling import Poller
    poller = Poller()
    base = rss()
    clients = [Client(url, poller=poller, timeout=300, high_water=high_water)
               for _ in range(count)]
    responses = [client.get(f"/download?size={size}", stream=True) for client in clients]
    taken = [0] * count
    largest_buffer = 0
    top = base
    started = time.perf_counter()
    deadline = time.monotonic() + 600
    turn = 0
    while not all(r.done and not r.buffered for r in responses):
        if time.monotonic() > deadline:
            raise TimeoutError("concurrent downloads did not finish")
        poller.poll(0.01)
        turn += 1
        for index, (client, response) in enumerate(zip(clients, responses)):
            client.service()
            largest_buffer = max(largest_buffer, response.buffered)
            if (turn + index) % 2 == 0:  # consumers slower than the network: half the turns
                taken[index] += len(response.take())
        if turn % 8 == 0:
            top = max(top, rss())
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    poller.close()
    failed = [r for r in responses if r.error is not None]
    return {"connections": count, "each_mib": size / MIB, "completed": count - len(failed),
            "all_bytes": all(t == size for t in taken), "seconds": round(elapsed, 2),
            "rss_growth_mib": round((top - base) / MIB, 1),
            "bound_mib": round(count * 2 * high_water / MIB, 1),  # mark + one receive
            "largest_buffer_kib": largest_buffer // 1024}


def wrk(url: str, compressed: bool, seconds: int, server_pid: int) -> dict:
    command = ["wrk", "-t1", "-c10", f"-d{seconds}s", url + "/json"]
    if compressed:
        command[1:1] = ["-H", "Accept-Encoding: gzip"]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "1"] + command
    before = process_cpu(server_pid)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    spent = process_cpu(server_pid) - before
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    if not rate:
        raise RuntimeError(f"wrk got no answer:\n{output}")
    answered = int(re.search(r"(\d+) requests in", output).group(1))
    number, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", output).groups()
    scale = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB}[unit]
    return {"requests_per_s": rate, "bytes_per_response": float(number) * scale / rate,
            "server_cpu_us": round(spent / answered * 1e6, 1)}


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-mib", type=float, default=1.0)
    parser.add_argument("--high-water", type=int, default=64 * 1024)
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5, help="transfers of each kind (median)")
    parser.add_argument("--out")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)  # with --serve
    parser.add_argument("--file", default="", help=argparse.SUPPRESS)  # with --serve
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    _raise_file_limit()
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    scratch = tempfile.TemporaryDirectory(prefix="client_streams-")
    served = write_file(Path(scratch.name) / "download.bin", args.size_mib * MIB)
    child = subprocess.Popen(pin + [sys.executable, __file__, "--serve", "--streams",
                                    str(args.streams), "--file", str(served)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = json.loads(child.stdout.readline())["port"]
        if shutil.which("taskset"):
            os.sched_setaffinity(0, {1})
        url = f"http://127.0.0.1:{port}"
        results = measure(url, args, child.pid)
    finally:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
        scratch.cleanup()
    report(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def write_file(path: Path, size: int) -> Path:
    """The file the server sends by sendfile; written once, it stays in the page cache."""
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(block)
    return path


def measure(url: str, args, server_pid: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from hio_http.tuning import keep_freed_memory
    # Both clients run in this process, under the malloc tuning the command line applies: a
    # 256 KiB receive then reuses freed memory instead of faulting in fresh pages each time.
    keep_freed_memory()
    size = args.size_mib * MIB
    results: dict = {"size_mib": args.size_mib, "reps": args.reps}
    # Downloads first: an upload leaves the server's disk writing its spilled gigabyte back
    # for a while, which would slow whatever runs next. Within a kind the two clients take
    # turns going first (ABBA), so a busy moment of the machine hits both alike.
    kinds = ((("hio_download", hio_download), ("urllib3_download", urllib3_download)),
             (("hio_file_download", hio_file_download),
              ("urllib3_file_download", urllib3_file_download)),
             (("hio_upload", hio_upload), ("urllib3_upload", urllib3_upload)))
    runs = [run for kind in kinds for run in kind]
    speeds: dict = {name: [] for name, _ in runs}
    growths: dict = {name: [] for name, _ in runs}
    cpus: dict = {name: [] for name, _ in runs}
    server_cpus: dict = {name: [] for name, _ in runs}
    for pair in kinds:
        for rep in range(args.reps):
            for name, run in (pair if rep % 2 == 0 else pair[::-1]):
                before, server_before = cpu_seconds(), process_cpu(server_pid)
                speed, growth = run(url, size)
                cpus[name].append(round(cpu_seconds() - before, 3))
                server_cpus[name].append(round(process_cpu(server_pid) - server_before, 2))
                speeds[name].append(round(speed, 1))
                growths[name].append(growth)
    for name, _ in runs:
        results[name] = {"mib_per_s": statistics.median(speeds[name]), "each": speeds[name],
                         "rss_growth_mib": round(max(growths[name]) / MIB, 2),
                         "cpu_s": statistics.median(cpus[name]), "cpu_each": cpus[name],
                         "server_cpu_s": statistics.median(server_cpus[name])}
    for (mine, _), (theirs, _) in kinds:
        # The machine's speed drifts within a run; each pair of neighbouring transfers shares
        # its moment, so the median of their ratios is the steadier comparison.
        results[mine]["pair_ratio"] = round(statistics.median(
            a / b for a, b in zip(speeds[mine], speeds[theirs])), 3)
    results["concurrent"] = concurrent_downloads(url, args.streams, int(args.stream_mib * MIB),
                                                 args.high_water)
    if shutil.which("wrk"):
        plains, gzips = [], []
        for _ in range(args.reps):  # interleaved too; the median by rate
            plains.append(wrk(url, False, args.wrk_seconds, server_pid))
            gzips.append(wrk(url, True, args.wrk_seconds, server_pid))
        middle = len(plains) // 2
        results["json_plain"] = sorted(plains, key=lambda r: r["requests_per_s"])[middle]
        results["json_gzip"] = sorted(gzips, key=lambda r: r["requests_per_s"])[middle]
        results["json_plain"]["cpu_each"] = [r["server_cpu_us"] for r in plains]
        results["json_gzip"]["cpu_each"] = [r["server_cpu_us"] for r in gzips]
        results["json_pair_ratio"] = round(statistics.median(
            g["requests_per_s"] / p["requests_per_s"] for p, g in zip(plains, gzips)), 3)
        results["json_cpu_ratio"] = round(statistics.median(r["server_cpu_us"] for r in plains)
                                          / statistics.median(r["server_cpu_us"] for r in gzips),
                                          2)
    return results


def report(results: dict) -> None:
    up, down = results["hio_upload"], results["hio_download"]
    print(f"{results['size_mib']} MiB through the client, median of {results['reps']} "
          f"(MiB/s, client CPU s / server CPU s, most RSS growth, ratio to urllib3):")
    for kind, mine, theirs in (("upload", up, results["urllib3_upload"]),
                               ("download", down, results["urllib3_download"]),
                               ("file", results["hio_file_download"],
                                results["urllib3_file_download"])):
        print(f"  {kind:8}  hio {mine['mib_per_s']:8.1f} MiB/s, {mine['cpu_s']:.2f} / "
              f"{mine['server_cpu_s']:.2f} s, RSS +{mine['rss_growth_mib']} MiB | urllib3 "
              f"{theirs['mib_per_s']:8.1f} MiB/s, {theirs['cpu_s']:.2f} / "
              f"{theirs['server_cpu_s']:.2f} s, RSS +{theirs['rss_growth_mib']} MiB | ratio "
              f"{mine['mib_per_s'] / theirs['mib_per_s']:.2f}x")
        print(f"            each: hio {mine['each']} | urllib3 {theirs['each']} | median "
              f"of the pairs' ratios {mine['pair_ratio']:.2f}x")
    print("concurrent streamed downloads:", json.dumps(results["concurrent"]))
    if "json_plain" in results:
        plain, gzipped = results["json_plain"], results["json_gzip"]
        print(f"Falcon JSON c=10: plain {plain['requests_per_s']:.0f} req/s "
              f"({plain['bytes_per_response']:.0f} B), gzip {gzipped['requests_per_s']:.0f} req/s "
              f"({gzipped['bytes_per_response']:.0f} B): "
              f"{gzipped['requests_per_s'] / plain['requests_per_s']:.2f}x the rate, "
              f"{plain['bytes_per_response'] / gzipped['bytes_per_response']:.1f}x fewer bytes; "
              f"median of the pairs' ratios {results['json_pair_ratio']:.2f}x")
        print(f"  server CPU per request (us): plain {plain['cpu_each']}, gzip "
              f"{gzipped['cpu_each']}: gzip costs {1 / results['json_cpu_ratio']:.2f}x "
              f"(the rate it allows: {results['json_cpu_ratio']:.2f}x)")


if __name__ == "__main__":
    main()

"""The benchmark harness (scripts/bench) runs end to end for hio_http alone: no peers, no
virtualenvs, no network; hio_http runs on this interpreter."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench"

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:8080/hello
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   178.50us  109.13us   2.64ms   93.20%
    Req/Sec    58.14k     1.69k   60.35k    63.64%
  Latency Distribution
     50%  154.00us
     75%  178.00us
     90%  266.00us
     99%    1.20ms
  63369 requests in 1.10s, 8.04MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  57623.43
Transfer/sec:      7.31MB
"""


def test_wrk_output_is_parsed():
    sys.path.insert(0, str(BENCH))
    try:
        import harness
    finally:
        sys.path.remove(str(BENCH))
    parsed = harness.parse_wrk(WRK_OUTPUT)
    assert parsed["rps"] == pytest.approx(57623.43)
    assert parsed["requests"] == 63369
    assert parsed["p50"] == pytest.approx(154e-6)
    assert parsed["p99"] == pytest.approx(1.2e-3)
    assert parsed["errors"] == 2 + 3 + 1
    assert parsed["bytes_per_s"] == pytest.approx(7.31 * 1024 * 1024)


def test_rounds_merge_into_one_row_per_case():
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))

    def row(server, rps, errors, status="ok"):
        return {"server": server, "case": "hello_c10", "title": "hello", "kind": "wrk",
                "status": status, "rps": rps, "errors": errors, "rps_runs": [rps],
                "socket_errors": {"read": errors}, "p50": rps / 1e6}

    merged = run.merge_rounds([row("a", 10, 1), row("b", 5, 0), row("a", 30, 2),
                               row("b", 7, 0, "error: died"), row("a", 20, 0)])
    first, second = merged
    assert (first["server"], first["rps"], first["p50"]) == ("a", 20, 20 / 1e6)
    assert first["errors"] == 3 and first["socket_errors"] == {"read": 3}
    assert first["rps_runs"] == [10, 30, 20] and first["rounds"] == 3
    assert first["status"] == "ok"
    assert (second["server"], second["rps"], second["status"]) == ("b", 6, "error: died")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("taskset") is None,
                    reason="needs wrk and taskset")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores")
def test_harness_measures_hio_http(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--only", "hio_http", "--cases", "hello_c10,download",
         "--duration", "1", "--warmup", "0", "--reps", "1", "--rounds", "2", "--no-plot",
         "--hio-http-python", sys.executable, "--out", str(out),
         "--venvs", str(tmp_path / "venvs")],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (out / "results.md").read_text()
    section = table.split("### hello keep-alive, c=10", 1)[1]  # the case's own table
    row = next(line for line in section.splitlines() if line.startswith("| hio_http |"))
    rate = float(re.match(r"\| hio_http \| ([\d,.]+)", row).group(1).replace(",", ""))
    assert rate > 0
    data = json.loads((out / "results.json").read_text())
    (measured,) = [r for r in data["results"] if r["case"] == "hello_c10"]
    assert measured["status"] == "ok" and measured["rps"] > 0 and measured["errors"] == 0
    assert measured["rounds"] == 2 and len(measured["rps_runs"]) == 2
    (download,) = [r for r in data["results"] if r["case"] == "download"]
    assert download["status"] == "ok" and download["errors"] == 0, download
    assert download["requests"] > 0 and download["mib_s"] > 100  # 10 MiB each, in a second

"""scripts/fuzz/fuzz_requestant.py, run as its README says: a short fuzzing run finds no crash
(so the harness keeps up with what the parser may answer), and a saved input replays, failing
when it shows the documented difference that FUZZ_SAME_STATUS=1 turns into a failure."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz" / "fuzz_requestant.py"


def fuzz(*args, same_status=False, cwd=None):
    env = dict(os.environ, FUZZ_SAME_STATUS="1" if same_status else "0")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def test_a_short_run_finds_no_crash(tmp_path):
    result = fuzz("-runs=20000", "-seed=7", "-max_total_time=60", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20000 runs" in result.stdout and "no crash" in result.stdout
    assert not list(tmp_path.glob("crash-*"))


def test_a_saved_input_replays(tmp_path):
    # One split (byte 0: default limits, one size), at 28: the end of the first request. An
    # unknown method after it gets 501 at a feed boundary, 400 mid-feed (a documented
    # difference, tests/test_requesting_properties.py): the same refusal, another status.
    stream = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nXYZ /b HTTP/1.1\r\nHost: h\r\n\r\n"
    saved = tmp_path / "input"
    saved.write_bytes(bytes([0x01, 28]) + stream)
    result = fuzz(str(saved), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replayed 1 input(s): no crash" in result.stdout
    strict = fuzz(str(saved), same_status=True, cwd=tmp_path)
    assert strict.returncode != 0
    assert "feeding in pieces [28, 28] gave" in strict.stderr

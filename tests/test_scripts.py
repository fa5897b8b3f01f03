"""The example scripts run as users run them."""

import re
import socket
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_daemon_example_handles_a_datagram_while_beating():
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "daemon_example.py"), "--limit", "2.5"],
        stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        port = int(re.search(r":(\d+)$", first.strip()).group(1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"ping", ("127.0.0.1", port))
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "datagram from 127.0.0.1" in output and "b'ping'" in output
    assert output.count("heartbeat") >= 2
    turns = int(re.search(r"counter ran (\d+) turns", output).group(1))
    assert turns >= 2.5 / 0.03125 * 0.8

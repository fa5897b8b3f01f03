"""End to end in a real headless browser (Debian's chromium, which .ci/run installs): the demo's
static page receives Server-Sent Events through EventSource."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from test_cli import start, stop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("chromium is not installed here (.ci/run installs it; CI runs this test)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


def dump_dom(url, tmp_path):
    """The page's DOM after it ran, as chromium --dump-dom prints it."""
    assert CHROMIUM, "chromium is required in CI"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         # Virtual time runs the page's scripts until the network is idle or 20 s have
         # passed; the page closes its EventSource after `limit` events, so idle comes.
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90)
    return result.stdout


def test_demo_page_receives_server_sent_events_in_chromium(tmp_path):
    process, base = start([sys.executable, "-m", "hio_http", "--port", "0"])
    try:
        dom = dump_dom(base + "/static/events.html?limit=3", tmp_path)
    finally:
        assert stop(process) == 0
    assert 'id="status">received 3<' in dom, dom[:2000]
    ticks = re.findall(r'<li class="event" data-id="(\d+)">tick (\d+) at tyme [\d.]+</li>', dom)
    assert len(ticks) == 3
    ids = [int(event_id) for event_id, _ in ticks]
    assert ids == sorted(ids) and len(set(ids)) == 3  # in order, none repeated

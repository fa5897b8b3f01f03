"""End to end in a real headless browser (Debian's chromium, which .ci/run installs): the demo's
WebSocket page talks to /ws/echo, with chromium's own client (and its permessage-deflate)."""

import os
import re
import shutil
import sys

import pytest

from test_browser import dump_dom
from test_cli import start, stop

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("chromium is not installed here (.ci/run installs it; CI runs this test)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


def test_demo_page_talks_websocket_in_chromium(tmp_path):
    process, base = start([sys.executable, "-m", "hio_http", "--port", "0"])
    try:
        # The page closes its WebSocket once every echo is back, so the network goes idle
        # and --virtual-time-budget ends the run.
        dom = dump_dom(base + "/static/websocket.html?count=4", tmp_path)
    finally:
        assert stop(process) == 0
    assert 'id="status">sent 5, received 5, closed 1000<' in dom, dom[:2000]
    replies = re.findall(r'<li class="reply">([^<]*)</li>', dom)
    assert replies == [f"echo: hello {n}" for n in range(1, 5)]
    assert '<li class="reply binary">binary 1,2,3,250</li>' in dom

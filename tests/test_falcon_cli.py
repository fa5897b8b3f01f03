"""What a Falcon user expects of a WSGI server started from the app's own directory as
`python -m hio_http --bind 127.0.0.1:PORT module:app`."""

import hashlib
import os
import signal
import sys
import textwrap
import time

import pytest
import requests

from test_cli import start

APP = textwrap.dedent('''
    import hashlib
    import pathlib

    import falcon

    HERE = pathlib.Path(__file__).parent


    class Things:
        def on_get(self, req, resp):
            resp.media = {"things": ["a", "b"]}
            resp.set_header("X-Exact", "yes")


    class Broken:
        def on_get(self, req, resp):
            raise RuntimeError("unhandled in the app")


    class Upload:
        def on_post(self, req, resp):
            form = req.get_media()
            for part in form:
                if part.name == "file":
                    data = part.stream.read()
                    resp.media = {"filename": part.filename, "size": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}


    app = falcon.App()
    app.add_route("/things", Things())
    app.add_route("/broken", Broken())
    app.add_route("/upload", Upload())
    app.add_static_route("/files", str(HERE / "files"))
''')


@pytest.fixture
def falcon_server(tmp_path):
    (tmp_path / "shop.py").write_text(APP)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "data.bin").write_bytes(bytes(range(256)) * 400)
    process, url = start([sys.executable, "-m", "hio_http", "--bind", "127.0.0.1:0",
                          "shop:app"], cwd=tmp_path)
    yield process, url
    if process.poll() is None:
        process.kill()
        process.wait()


def test_falcon_expectations(falcon_server):
    process, url = falcon_server

    response = requests.get(url + "/things", timeout=5)
    assert response.status_code == 200
    assert response.content == b'{"things": ["a", "b"]}'
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["X-Exact"] == "yes"

    broken = requests.get(url + "/broken", timeout=5)
    assert broken.status_code == 500
    assert "unhandled in the app" not in broken.text

    payload = os.urandom(10 * 1024 * 1024)
    upload = requests.post(url + "/upload", files={"file": ("big.bin", payload)}, timeout=30)
    assert upload.status_code == 200
    assert upload.json() == {"filename": "big.bin", "size": len(payload),
                             "sha256": hashlib.sha256(payload).hexdigest()}

    whole = bytes(range(256)) * 400
    ranged = requests.get(url + "/files/data.bin", headers={"Range": "bytes=100-299"},
                          timeout=5)
    assert ranged.status_code == 206
    assert ranged.headers["Content-Range"] == f"bytes 100-299/{len(whole)}"
    assert ranged.content == whole[100:300]
    assert requests.get(url + "/files/data.bin", timeout=5).content == whole

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    assert time.monotonic() - started < 20

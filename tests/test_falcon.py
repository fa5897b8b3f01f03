"""A Falcon app served for real and checked with `requests`."""

import hashlib
import os

import falcon
import pytest
import requests


class Things:
    def __init__(self):
        self.things = {}

    def on_get(self, req, resp):
        resp.media = {"things": sorted(self.things)}

    def on_post(self, req, resp):
        thing = req.get_media()
        self.things[thing["name"]] = thing
        resp.status = falcon.HTTP_201
        resp.media = thing


class Thing:
    def __init__(self, things):
        self.things = things

    def on_get(self, req, resp, name):
        if name not in self.things.things:
            raise falcon.HTTPNotFound(description=f"no thing called {name}")
        resp.media = self.things.things[name]


class Upload:
    def on_post(self, req, resp):
        digest = hashlib.sha256()
        size = 0
        while True:
            block = req.bounded_stream.read(65536)
            if not block:
                break
            digest.update(block)
            size += len(block)
        resp.media = {"size": size, "sha256": digest.hexdigest()}


class Download:
    def on_get(self, req, resp, count):
        block = b"0123456789abcdef" * 4096  # 64 KiB

        def stream():
            for _ in range(count):
                yield block

        resp.content_type = "application/octet-stream"
        resp.stream = stream()


@pytest.fixture
def falcon_url(serve):
    app = falcon.App()
    things = Things()
    app.add_route("/things", things)
    app.add_route("/things/{name}", Thing(things))
    app.add_route("/upload", Upload())
    app.add_route("/download/{count:int}", Download())
    return serve(app).url


def test_resources_json_and_path_parameters(falcon_url):
    session = requests.Session()
    created = session.post(falcon_url + "/things", json={"name": "lamp", "watts": 40}, timeout=5)
    assert created.status_code == 201
    assert created.json() == {"name": "lamp", "watts": 40}
    assert session.get(falcon_url + "/things", timeout=5).json() == {"things": ["lamp"]}
    assert session.get(falcon_url + "/things/lamp", timeout=5).json()["watts"] == 40
    missing = session.get(falcon_url + "/things/sofa", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["description"] == "no thing called sofa"


def test_one_mebibyte_upload(falcon_url):
    payload = os.urandom(1 << 20)
    response = requests.post(falcon_url + "/upload", data=payload, timeout=10)
    assert response.json() == {"size": len(payload),
                               "sha256": hashlib.sha256(payload).hexdigest()}


def test_chunked_upload_from_a_generator(falcon_url):
    parts = [os.urandom(100_000) for _ in range(5)]
    response = requests.post(falcon_url + "/upload", data=iter(parts), timeout=10)
    assert response.json()["size"] == 500_000
    assert response.json()["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()


def test_streamed_download(falcon_url):
    with requests.get(falcon_url + "/download/160", stream=True, timeout=10) as response:
        assert response.headers.get("Transfer-Encoding") == "chunked"
        digest = hashlib.sha256()
        size = 0
        for block in response.iter_content(65536):
            digest.update(block)
            size += len(block)
    expected = (b"0123456789abcdef" * 4096) * 160
    assert size == len(expected) == 10 * 1024 * 1024
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()

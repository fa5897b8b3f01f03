"""Response compression: the negotiation on its own (Accept-Encoding q-values, types, Vary,
ETag), then over real sockets with requests, curl and the hio_http client: WSGI apps, streamed
bodies flushed per item, bare CustomResponders, StaticSink with precompressed siblings, and
the answers that must stay as they are (Range, event streams, encoded, small, refused)."""

import gzip
import os
import shutil
import socket
import subprocess
import threading
import zlib

import falcon
import pytest
import requests

from hio_http.clienting import Client
from hio_http.compression import (Compression, GzipStream, Inflater, accepted_codings, accepts,
                                  choose_coding, compressed_headers, compressible)
from hio_http.config import gather, settings_from
from hio_http.responding import CustomResponder
from hio_http.serving import BareServer
from hio_http.static import StaticSink
from hio_http.testing import serve_in_thread

JSON_ITEMS = {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(300)]}


# -- negotiation, no sockets --------------------------------------------------------------------

@pytest.mark.parametrize("header, allowed", [
    ("gzip", True), ("GZIP;Q=0.5", True), ("x-gzip", True), ("deflate, gzip;q=0.001", True),
    ("*", True), ("*;q=0", False), ("gzip;q=0", False), ("gzip;q=0, *", False),
    ("identity", False), ("", False), (None, False), ("br", False), ("gzip;q=1.5", False),
    ("gzip;q=0.0001", False), ("gzip;q=abc", False), ("identity;q=1, *;q=0.2", True)])
def test_accept_encoding_qvalues(header, allowed):
    assert accepts(header, "gzip") is allowed


def test_accepted_codings_table():
    assert accepted_codings(" gzip ; q=0.5 , br;q=1, identity;q=0") == {
        "gzip": 0.5, "br": 1.0, "identity": 0.0}


@pytest.mark.parametrize("content_type, expected", [
    ("text/html; charset=utf-8", True), ("application/json", True), ("application/ld+json", True),
    ("application/javascript", True), ("image/svg+xml", True), ("application/xml", True),
    ("image/png", False), ("application/octet-stream", False), ("application/gzip", False),
    ("text/event-stream", False), (None, False), ("", False)])
def test_compressible_types(content_type, expected):
    assert compressible(content_type) is expected


def test_choose_coding_rules():
    policy = Compression(min_size=100)
    text = [("Content-Type", "text/plain")]
    assert choose_coding(policy, 200, text, "gzip", 1000) == (True, True)
    assert choose_coding(policy, 200, text, "identity", 1000) == (True, False)  # still varies
    assert choose_coding(policy, 200, text, "gzip", 99) == (False, False)
    assert choose_coding(policy, 200, text, "gzip", None) == (True, True)  # streamed
    assert choose_coding(policy, 206, text, "gzip", 1000) == (False, False)
    assert choose_coding(policy, 304, text, "gzip", 1000) == (False, False)
    assert choose_coding(None, 200, text, "gzip", 1000) == (False, False)
    assert choose_coding(policy, 200, text + [("Content-Encoding", "br")], "gzip",
                         1000) == (False, False)
    assert choose_coding(policy, 200, text + [("Cache-Control", "public, no-transform")],
                         "gzip", 1000) == (False, False)
    events = [("Content-Type", "text/event-stream")]
    assert choose_coding(policy, 200, events, "gzip", None) == (False, False)
    assert choose_coding(Compression(event_streams=True), 200, events, "gzip",
                         None) == (True, True)


def test_compressed_headers_weaken_etag_and_merge_vary():
    headers = [("Content-Type", "text/plain"), ("Content-Length", "5000"), ("ETag", '"v1"'),
               ("Vary", "Origin")]
    assert compressed_headers(headers, True, True) == [
        ("Content-Type", "text/plain"), ("ETag", 'W/"v1"'), ("Vary", "Origin, Accept-Encoding"),
        ("Content-Encoding", "gzip")]
    assert compressed_headers([("ETag", 'W/"x"'), ("Vary", "*")], True, False) == [
        ("ETag", 'W/"x"'), ("Vary", "*")]


def test_gzip_stream_flushes_each_item():
    stream = GzipStream()
    first = stream.compress(b"first item " * 50)
    inflater = Inflater("gzip")
    inflater.feed(first)
    assert inflater.read(1 << 20) == b"first item " * 50  # readable before the stream ends
    rest = stream.compress(b"second") + stream.finish()
    assert gzip.decompress(first + rest) == b"first item " * 50 + b"second"


def test_settings_from_command_line_and_environment():
    options = gather(["--compress", "--compress-min-size", "10", "--compress-level", "1"], {})
    settings = settings_from(options)
    assert settings["compress"] is True and settings["compress_min_size"] == 10
    assert settings["compress_level"] == 1
    assert gather([], {"HIO_HTTP_COMPRESS": "1"})["compress"] is True
    assert gather([], {})["compress"] is False
    with pytest.raises(ValueError, match="level"):
        BareServer(compress=True, compress_level=12)


# -- over sockets -------------------------------------------------------------------------------

def json_app():
    app = falcon.App()

    class Items:
        def on_get(self, req, resp):
            resp.media = JSON_ITEMS
            resp.set_header("ETag", '"items-1"')

    class Small:
        def on_get(self, req, resp):
            resp.media = {"ok": True}

    class Image:
        def on_get(self, req, resp):
            resp.content_type = "image/png"
            resp.data = b"\x89PNG" + b"\0" * 5000

    class Encoded:
        def on_get(self, req, resp):
            resp.content_type = "text/plain"
            resp.set_header("Content-Encoding", "gzip")
            resp.data = gzip.compress(b"already " * 1000)

    app.add_route("/items", Items())
    app.add_route("/small", Small())
    app.add_route("/image", Image())
    app.add_route("/encoded", Encoded())
    return app


def test_off_by_default():
    with serve_in_thread(json_app()) as server:
        response = requests.get(server.url + "/items")
    assert "Content-Encoding" not in response.headers and "Vary" not in response.headers


def test_requests_decodes_compressed_json():
    with serve_in_thread(json_app(), compress=True) as server:
        compressed = requests.get(server.url + "/items", stream=True)
        wire = compressed.raw.read(decode_content=False)
        plain = requests.get(server.url + "/items", headers={"Accept-Encoding": "identity"})
        decoded = requests.get(server.url + "/items")
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert int(compressed.headers["Content-Length"]) == len(wire)
    assert len(wire) * 5 < len(plain.content)
    assert decoded.json() == JSON_ITEMS and plain.json() == JSON_ITEMS
    assert decoded.headers["Vary"] == "Accept-Encoding" == plain.headers["Vary"]
    assert decoded.headers["ETag"] == 'W/"items-1"' and plain.headers["ETag"] == '"items-1"'
    assert "Content-Encoding" not in plain.headers


@pytest.mark.parametrize("path", ["/small", "/image", "/encoded"])
def test_left_as_they_are(path):
    with serve_in_thread(json_app(), compress=True) as server:
        response = requests.get(server.url + path, stream=True)
        wire = response.raw.read(decode_content=False)
    if path == "/encoded":
        assert response.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(wire) == b"already " * 1000  # not gzipped twice
    else:
        assert "Content-Encoding" not in response.headers
        assert len(wire) == int(response.headers["Content-Length"])


def test_head_has_the_headers_of_get():
    def app(environ, start_response):  # the same answer to HEAD: the server drops the body
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<p>paragraph</p>\n" * 500]

    with serve_in_thread(app, compress=True) as server:
        head = requests.head(server.url + "/page")
        get = requests.get(server.url + "/page", stream=True)
        wire = get.raw.read(decode_content=False)
    assert head.headers["Content-Encoding"] == "gzip" and head.content == b""
    assert head.headers["Content-Length"] == str(len(wire))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_compressed_decodes():
    with serve_in_thread(json_app(), compress=True) as server:
        result = subprocess.run(["curl", "-sS", "--compressed", "-D", "-", server.url + "/items"],
                                capture_output=True, timeout=30, check=True)
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    assert falcon.media.JSONHandler().deserialize(
        __import__("io").BytesIO(body), "application/json", len(body)) == JSON_ITEMS


def test_streamed_items_are_flushed_one_by_one():
    """A long-poll style body: the first item must be readable while the app waits."""
    second = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/x-ndjson")])

        def body():
            yield b'{"event": "first"}\n' * 40
            while not second.is_set():
                yield b""
            yield b'{"event": "second"}\n'
        return body()

    with serve_in_thread(app, compress=True, compress_min_size=0) as server:
        client = Client(server.url)
        response = client.get("/poll", stream=True)
        first = []
        client.run_until(lambda: first.append(response.take()) or b"".join(first), timeout=10)
        assert b"".join(first) == b'{"event": "first"}\n' * 40 and not response.done
        second.set()
        rest = []
        client.run_until(lambda: rest.append(response.take()) or response.done, timeout=10)
        rest.append(response.take())
        client.close()
    assert response.header("content-encoding") == "gzip"
    assert response.header("transfer-encoding") == "chunked"
    assert b"".join(rest) == b'{"event": "second"}\n'


def test_event_streams_are_not_compressed_unless_asked():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return [b"data: x\n\n" * 500]

    def handler(request):
        return CustomResponder(200, [("Content-Type", "text/event-stream")],
                               body=iter([b"data: y\n\n" * 500]), compress=True)

    with serve_in_thread(app, compress=True) as server:
        plain = requests.get(server.url + "/events")
    with serve_in_thread(cls=BareServer, handler=handler) as server:
        asked = requests.get(server.url + "/events")
    assert "Content-Encoding" not in plain.headers
    assert asked.headers["Content-Encoding"] == "gzip" and asked.text == "data: y\n\n" * 500


def test_custom_responder_chooses_for_itself():
    def handler(request):
        if request.path == "/on":
            return CustomResponder(200, [("Content-Type", "text/plain")], body=b"on " * 1000,
                                   compress=True)
        if request.path == "/off":
            return CustomResponder(200, [("Content-Type", "text/plain")], body=b"off " * 1000,
                                   compress=False)
        return CustomResponder(200, [("Content-Type", "text/plain")], body=b"server " * 1000)

    with serve_in_thread(cls=BareServer, handler=handler) as server:
        on = requests.get(server.url + "/on")
        default_off = requests.get(server.url + "/default")
    with serve_in_thread(cls=BareServer, handler=handler, compress=True) as server:
        off = requests.get(server.url + "/off")
        default_on = requests.get(server.url + "/default")
    assert on.headers.get("Content-Encoding") == "gzip" and on.text == "on " * 1000
    assert default_on.headers.get("Content-Encoding") == "gzip"
    assert "Content-Encoding" not in off.headers and "Content-Encoding" not in default_off.headers


def test_hio_client_decodes_our_compressed_answers_and_counts_max_body_decoded():
    with serve_in_thread(json_app(), compress=True) as server:
        client = Client(server.url)
        response = client.get("/items")
        client.run_until(response, timeout=10)
        limited = Client(server.url, max_body=1000)
        refused = limited.get("/items")
        limited.run_until(refused, timeout=10)
        client.close()
        limited.close()
    assert response.header("content-encoding") == "gzip" and response.json() == JSON_ITEMS
    assert refused.error is not None and "max_body" in str(refused.error)


def test_a_raw_client_sees_gzip_only_when_it_asks():
    with serve_in_thread(json_app(), compress=True) as server:
        host, port = server.address[:2]
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(b"GET /items HTTP/1.0\r\nHost: x\r\nAccept-Encoding: gzip;q=0.5\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    assert zlib.decompress(body, 31).startswith(b'{"items"')


# -- static files -------------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    (tmp_path / "app.js").write_text("console.log('plain');\n" * 200)
    (tmp_path / "app.js.gz").write_bytes(gzip.compress(b"console.log('gzip sibling');\n"))
    (tmp_path / "style.css").write_text("body { color: red; }\n" * 200)
    (tmp_path / "only.js").write_text("only();\n")
    (tmp_path / "only.js.br").write_bytes(b"brotli bytes")
    (tmp_path / "old.js").write_text("fresh();\n")
    (tmp_path / "old.js.gz").write_bytes(gzip.compress(b"stale();\n"))
    stale = os.stat(tmp_path / "old.js").st_mtime_ns - 10**9
    os.utime(tmp_path / "old.js.gz", ns=(stale, stale))
    app = falcon.App()
    app.add_sink(StaticSink(tmp_path, prefix="/s"), "/s")
    return app


def test_static_precompressed_sibling(site):
    with serve_in_thread(site) as server:
        gz = requests.get(server.url + "/s/app.js")
        plain = requests.get(server.url + "/s/app.js", headers={"Accept-Encoding": "identity"})
        brotli = requests.get(server.url + "/s/only.js", stream=True,
                              headers={"Accept-Encoding": "br, gzip"})
        brotli_bytes = brotli.raw.read(decode_content=False)
        stale = requests.get(server.url + "/s/old.js")
    assert gz.headers["Content-Encoding"] == "gzip" and gz.text == "console.log('gzip sibling');\n"
    assert gz.headers["Content-Type"].startswith("text/javascript") or \
        gz.headers["Content-Type"].startswith("application/javascript")
    assert gz.headers["Vary"] == "Accept-Encoding" == plain.headers["Vary"]
    assert gz.headers["ETag"] != plain.headers["ETag"]
    assert plain.text == "console.log('plain');\n" * 200
    assert brotli.headers["Content-Encoding"] == "br" and brotli_bytes == b"brotli bytes"
    assert stale.text == "fresh();\n" and "Content-Encoding" not in stale.headers


def test_static_files_are_compressed_on_the_fly_but_not_ranges(site):
    with serve_in_thread(site, compress=True) as server:
        whole = requests.get(server.url + "/s/style.css")
        ranged = requests.get(server.url + "/s/style.css", headers={"Range": "bytes=0-9"})
        again = requests.get(server.url + "/s/style.css",
                             headers={"If-None-Match": whole.headers["ETag"]})
    assert whole.headers["Content-Encoding"] == "gzip"
    assert whole.text == "body { color: red; }\n" * 200
    assert whole.headers["ETag"].startswith('W/"')
    assert ranged.status_code == 206 and ranged.content == b"body { col"
    assert "Content-Encoding" not in ranged.headers
    assert again.status_code == 304  # the weak tag still validates


@pytest.mark.parametrize("compress", [True, False])
def test_a_304_carries_the_vary_and_etag_its_200_would(site, compress):
    """RFC 9110 §15.4.5: a 304 sends the Vary and ETag of the 200 it stands for (the server's
    own gzip included, though a 304 has no Content-Type to decide by) and no Content-Encoding."""
    cases = [("/s/app.js", "gzip"), ("/s/app.js", "identity"), ("/s/style.css", "gzip"),
             ("/s/style.css", "identity")]
    answers = []
    with serve_in_thread(site, compress=compress) as server:
        client = Client(server.url)
        for path, accept in cases:
            first = client.get(path, headers={"Accept-Encoding": accept})
            client.run_until(first, timeout=10)
            again = client.get(path, headers={"Accept-Encoding": accept,
                                              "If-None-Match": first.header("etag")})
            client.run_until(again, timeout=10)
            answers.append((first, again))
        client.close()
        by_requests = requests.get(server.url + "/s/style.css",
                                   headers={"If-None-Match": answers[2][0].header("etag")})
    for (path, accept), (first, again) in zip(cases, answers):
        assert first.status == 200 and again.status == 304, (path, accept)
        assert again.header("vary") == first.header("vary"), (path, accept)
        assert again.header("etag") == first.header("etag"), (path, accept)
        assert again.header("content-encoding") is None and again.body == b""
    app_js_gzip, app_js_plain, css_gzip, css_plain = (first for first, _ in answers)
    assert app_js_gzip.header("content-encoding") == "gzip"  # the sibling
    assert app_js_plain.header("vary") == "Accept-Encoding"  # a sibling exists: always varies
    assert (css_gzip.header("vary") == "Accept-Encoding") is compress
    assert css_gzip.header("etag").startswith('W/"') is compress  # gzipped on the fly
    assert not css_plain.header("etag").startswith("W/")
    assert by_requests.status_code == 304
    assert by_requests.headers.get("Vary") == css_gzip.header("vary")
    assert by_requests.headers["ETag"] == css_gzip.header("etag")


def test_a_compressed_upload_reaches_the_app_as_it_came():
    """The server inflates no request body, so a gzip bomb sent to it is only its own size."""
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)

    def app(environ, start_response):
        data = environ["wsgi.input"].read()
        body = b"%d %s" % (len(data), environ.get("HTTP_CONTENT_ENCODING", "").encode())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    with serve_in_thread(app, compress=True) as server:
        client = Client(server.url)
        response = client.post("/up", body=bomb, headers={"Content-Encoding": "gzip"})
        client.run_until(response, timeout=10)
        client.close()
    assert response.body == b"%d gzip" % len(bomb) and len(bomb) < 1024 * 1024

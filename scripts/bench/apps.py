"""The WSGI apps every server under test hosts, behind one path dispatcher: `apps:app`.

    /hello     plain WSGI, 13-byte body with Content-Length
    /block     hello after ?ms= (default 20) milliseconds in a blocking call (a database query)
    /json      Falcon, a small JSON object
    /upload    POST sink: reads the whole body, answers with its length
    /download  a 10 MiB file through wsgi.file_wrapper (BENCH_DOWNLOAD_FILE)
    /events    Server-Sent Events from hio_http.sse, where it is importable

Only the standard library and Falcon are needed, so the module imports under every peer.
"""

import os
import threading
import time
from urllib.parse import parse_qs

import falcon

HELLO = b"Hello, World!"
BLOCK = 64 * 1024


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


def block(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    time.sleep(float(query.get("ms", ["20"])[0]) / 1000)
    return hello(environ, start_response)


class JsonHello:
    def on_get(self, req, resp):
        resp.media = {"message": "Hello, World!"}


json_app = falcon.App()
json_app.add_route("/json", JsonHello())


def upload(environ, start_response):
    """Read every byte of the body in blocks, as an app that stores uploads would."""
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    received = 0
    while remaining > 0:
        block = stream.read(min(BLOCK, remaining))
        if not block:
            break
        received += len(block)
        remaining -= len(block)
    body = str(received).encode("ascii")
    status = "200 OK" if remaining == 0 else "400 Bad Request"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def download(environ, start_response):
    path = os.environ["BENCH_DOWNLOAD_FILE"]
    handle = open(path, "rb")
    size = os.fstat(handle.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(handle, BLOCK)
    return _blocks(handle)  # a server without file_wrapper gets a plain iterable


def _blocks(handle):
    try:
        while True:
            block = handle.read(BLOCK)
            if not block:
                return
            yield block
    finally:
        handle.close()


def not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"Not Found\n"]


ROUTES = {"/hello": hello, "/block": block, "/json": json_app, "/upload": upload, "/download": download}


def app(environ, start_response):
    return ROUTES.get(environ.get("PATH_INFO", ""), not_found)(environ, start_response)


def _serve_events():
    """/events on hio_http: a Broadcaster fed by a thread that publishes when a datagram
    arrives on BENCH_SSE_UDP_PORT (its text is how many events to publish)."""
    try:
        from hio_http.sse import Broadcaster
    except ImportError:
        return
    broadcaster = Broadcaster()

    class Events:
        def on_get(self, req, resp):
            broadcaster.stream(req, resp)

    events_app = falcon.App()
    events_app.add_route("/events", Events())
    ROUTES["/events"] = events_app
    port = os.environ.get("BENCH_SSE_UDP_PORT")
    if port:
        threading.Thread(target=_publisher, args=(broadcaster, int(port)), daemon=True,
                         name="bench-sse-publisher").start()


def _publisher(broadcaster, port):
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        while True:
            data, _ = sock.recvfrom(64)
            for _ in range(max(1, int(data or b"1"))):
                broadcaster.publish(str(time.monotonic()))


_serve_events()

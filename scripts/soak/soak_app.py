"""The mixed-traffic WSGI app the soak serves: small text, JSON, an upload that answers with the
size it received, a 1 MiB streamed download, and a long-poll that says "not yet" for a while.
"""

import json
import time

SMALL = b"hello from the soak\n"
BLOCK = bytes(range(256)) * 256  # 64 KiB, a recognisable pattern
DOWNLOAD_BLOCKS = 16  # 1 MiB
LONG_POLL_SECONDS = 0.2


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/small":
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(SMALL)))])
        return [SMALL]
    if path == "/json":
        body = json.dumps({"kind": "json", "query": environ.get("QUERY_STRING", ""),
                           "numbers": list(range(20))}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/upload" and environ["REQUEST_METHOD"] == "POST":
        stream, size = environ["wsgi.input"], 0
        while True:
            block = stream.read(65536)
            if not block:
                break
            size += len(block)
        body = json.dumps({"size": size}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/download":
        # No Content-Length: streamed with chunked framing, one block per pull.
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return (BLOCK for _ in range(DOWNLOAD_BLOCKS))
    if path == "/longpoll":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return long_poll(time.monotonic() + LONG_POLL_SECONDS)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


def long_poll(ready_at):
    """b"" means "not yet": the server comes back on a later pass, serving others meanwhile."""
    while time.monotonic() < ready_at:
        yield b""
    yield b"done\n"

"""The built-in demo: a small Falcon app served when no app is named on the command line, with
static pages, a Server-Sent Events stream fed by a clock doer in the same loop, and WebSocket
echo and chat endpoints on the same port."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs

import falcon

from .doing import Doer
from .sse import Broadcaster
from .static import StaticSink
from .websocket import Room, WebSocketHandler

STATIC = Path(__file__).resolve().parent / "demo_static"

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>hio_http</title></head>
<body>
<h1>hio_http is serving</h1>
<p>A cooperative, nonblocking WSGI server on a doer scheduler.</p>
<ul>
<li><a href="/hello">/hello</a> — plain text</li>
<li><a href="/json">/json</a> — JSON</li>
<li><a href="/echo/anything">/echo/{word}</a> — a path parameter</li>
<li><a href="/later?seconds=2">/later?seconds=N</a> — an answer that takes N seconds</li>
<li><a href="/static/events.html">/static/events.html</a> — live Server-Sent Events</li>
<li><a href="/static/websocket.html">/static/websocket.html</a> — WebSocket echo and chat</li>
</ul>
</body>
</html>
"""

events = Broadcaster(heartbeat=15.0)


class Home:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_HTML
        resp.text = PAGE


class Hello:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Hello, world!\n"


class Json:
    def on_get(self, req, resp):
        resp.media = {"message": "Hello, world!", "server": "hio_http"}


class Echo:
    def on_get(self, req, resp, word):
        resp.media = {"word": word, "query": dict(req.params)}

    def on_post(self, req, resp, word):
        data = req.bounded_stream.read()
        resp.media = {"word": word, "received": len(data)}


class Later:
    """Answers after `?seconds=` (at most 30): until then its body says "not yet" (b""), so the
    loop serves everyone else meanwhile, and the response head waits too."""

    def on_get(self, req, resp):
        seconds = min(max(req.get_param_as_float("seconds", default=1.0), 0.0), 30.0)
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = _after(time.monotonic() + seconds, f"answered after {seconds:g} s\n")


def _after(when: float, text: str):
    while time.monotonic() < when:
        yield b""
    yield text.encode("utf-8")


class Events:
    def on_get(self, req, resp):
        events.stream(req, resp)


class Clock(Doer):
    """Publishes a "tick" event to every /events subscriber each tock."""

    def __init__(self, broadcaster: Broadcaster = events, **kwa):
        kwa.setdefault("tock", 0.5)
        super().__init__(**kwa)
        self.broadcaster = broadcaster
        self.count = 0

    def recur(self, tyme: float) -> bool:
        self.count += 1
        self.broadcaster.publish(f"tick {self.count} at tyme {tyme:.2f}", event="tick")
        return False


class EchoSocket(WebSocketHandler):
    """/ws/echo: every message comes back, text as "echo: ..." and binary as it was."""

    def on_message(self, message):
        self.send("echo: " + message if isinstance(message, str) else message)


chat = Room()


class ChatSocket(WebSocketHandler):
    """/ws/chat: every text message goes to everyone in the room (`?name=` names the sender)."""

    def on_open(self, request):
        self.name = parse_qs(request.query).get("name", ["anonymous"])[0][:32]
        chat.join(self)
        chat.broadcast(f"* {self.name} joined ({len(chat)} here)")

    def on_message(self, message):
        if isinstance(message, str):
            chat.broadcast(f"{self.name}: {message}")

    def on_close(self, code, reason):
        chat.broadcast(f"* {self.name} left")


websockets = {"/ws/echo": EchoSocket, "/ws/chat": ChatSocket}


def create_app() -> falcon.App:
    demo = falcon.App()
    demo.add_route("/", Home())
    demo.add_route("/hello", Hello())
    demo.add_route("/json", Json())
    demo.add_route("/echo/{word}", Echo())
    demo.add_route("/later", Later())
    demo.add_route("/events", Events())
    demo.add_sink(StaticSink(STATIC, prefix="/static"), "/static")
    return demo


def doers() -> list:
    """The doers that make the demo live: run them beside its ServerDoer."""
    return [Clock()]


app = create_app()

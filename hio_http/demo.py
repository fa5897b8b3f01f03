"""The built-in demo: a small Falcon app served when no app is named on the command line."""

from __future__ import annotations

import falcon

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
</ul>
</body>
</html>
"""


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


def create_app() -> falcon.App:
    demo = falcon.App()
    demo.add_route("/", Home())
    demo.add_route("/hello", Hello())
    demo.add_route("/json", Json())
    demo.add_route("/echo/{word}", Echo())
    return demo


app = create_app()

"""One Doist, a Falcon app and a client of it: the client polls the app's /status every
`--interval` seconds and prints each answer, while the server keeps serving everyone else.

    python scripts/client_daemon_example.py --limit 3
    curl http://127.0.0.1:<port>/status          # the port is printed on the first line

Neither side blocks the other: both are doers in the same loop, and the client's socket is
watched by the same Poller as the server's, so each answer is handled as soon as it arrives.
"""

import argparse

import falcon

from hio_http.clienting import Client, ClientDoer
from hio_http.doing import Doer, Doist
from hio_http.serving import Server, ServerDoer
from hio_http.timing import Tymer


class Status:
    """The endpoint being watched: a counter of the requests it has answered."""

    def __init__(self):
        self.hits = 0

    def on_get(self, req, resp):
        self.hits += 1
        resp.media = {"hits": self.hits}


class Watcher(Doer):
    """Every `interval` seconds asks for `path`, and prints each answer once it is complete."""

    def __init__(self, client: Client, path: str, interval: float, **kwa):
        super().__init__(**kwa)
        self.client = client
        self.path = path
        self.interval = interval
        self.timer = None
        self.pending = None

    def enter(self):
        self.timer = Tymer(tymth=self.tymth, duration=0.0)  # the first request right away

    def recur(self, tyme):
        if self.pending is not None and self.pending.done:
            response, self.pending = self.pending, None
            if response.error is not None:
                print(f"{tyme:7.3f} GET {self.path} failed: {response.error}", flush=True)
            else:
                print(f"{tyme:7.3f} GET {self.path} -> {response.status} {response.json()}",
                      flush=True)
        if self.pending is None and self.timer.expired:
            self.timer.start(duration=self.interval)
            self.pending = self.client.request("GET", self.path)
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--limit", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)

    app = falcon.App()
    app.add_route("/status", Status())
    doist = Doist(tock=0.03125, real=True, limit=args.limit)
    server = Server(app, host=args.host, port=args.port, poller=doist.poller)
    server.open()
    print(f"serving on {server.url}", flush=True)
    client = Client(server.url, timeout=5.0)
    doist.do(doers=[ServerDoer(server), ClientDoer(client),
                    Watcher(client, "/status", args.interval)])
    print(f"done; the client opened {client.connections_opened} connection(s)", flush=True)


if __name__ == "__main__":
    main()

"""A Falcon app and a periodic doer sharing one Doist: the server is just another doer.

    python scripts/falcon_example.py --port 8000
    curl http://127.0.0.1:8000/ticks
"""

import argparse

import falcon

from hio_http.doing import Doer, Doist
from hio_http.serving import Server, ServerDoer


class Ticker(Doer):
    """Counts seconds while the server serves; the app reads the count."""

    def __init__(self, **kwa):
        super().__init__(**kwa)
        self.count = 0

    def recur(self, tyme):
        self.count += 1
        return False


class Ticks:
    def __init__(self, ticker):
        self.ticker = ticker

    def on_get(self, req, resp):
        resp.media = {"ticks": self.ticker.count}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--limit", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)

    ticker = Ticker(tock=1.0)
    app = falcon.App()
    app.add_route("/ticks", Ticks(ticker))
    server = Server(app, host=args.host, port=args.port)
    server.open()
    print(f"serving on {server.url}", flush=True)
    Doist(tock=0.03125, real=True, limit=args.limit, doers=[ServerDoer(server), ticker]).do()


if __name__ == "__main__":
    main()

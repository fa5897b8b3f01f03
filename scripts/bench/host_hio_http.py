"""Host `apps:app` on hio_http with settings its command line does not offer, e.g.

    python host_hio_http.py --port 8080 --max-connections 20000

Used only for the idle-connection cases, where the default max_connections (1000) caps what
the server accepts; everything else runs hio_http through its own CLI.
"""

import argparse
import signal

from hio_http import Doist, Server, ServerDoer

from apps import app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tock", type=float, default=0.03125)
    parser.add_argument("--max-connections", type=int, default=20000)
    args = parser.parse_args(argv)
    server = Server(app, host=args.host, port=args.port, max_connections=args.max_connections)
    server.open()
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"hio_http serving on {server.url} max_connections={args.max_connections}", flush=True)
    Doist(tock=args.tock, real=True, doers=[ServerDoer(server)]).do()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()

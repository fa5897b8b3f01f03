"""Host `apps:app` on the original hio package's own WSGI server, under hio's own Doist.

    python host_hio.py --port 8080 --tock 0.001

Uses hio.core.http.Server (a tcp.Server servant, polled each pass) and its ServerDoer; the
Doist runs in real time, sleeping out the rest of each tock between passes.
"""

import argparse
import signal

from hio.base import doing
from hio.core.http import Server, ServerDoer

from apps import app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tock", type=float, default=0.03125)
    parser.add_argument("--backlog", type=int, default=1024,
                        help="listen backlog (hio's default is 128; the other servers use 1024)")
    args = parser.parse_args(argv)
    # tymeout=0: hio closes no idle connection, as with its Remoter default.
    server = Server(app=app, host=args.host, port=args.port, bl=args.backlog, tymeout=0.0)
    signal.signal(signal.SIGTERM, _interrupt)  # hio's Doist.do ends on KeyboardInterrupt
    print(f"hio serving on http://{args.host}:{args.port} tock={args.tock}", flush=True)
    doist = doing.Doist(tock=args.tock, real=True)
    doist.do(doers=[ServerDoer(server=server)])


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()

"""The command line: `hio-http [--host H] [--port P | --bind H:P] [module:app]`."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from typing import Optional, Sequence

from . import __version__
from .doing import Doist
from .serving import Server, ServerDoer

logger = logging.getLogger("hio_http")


def load_app(spec: str):
    """Import `module:attribute` (attribute defaults to `app`) and return the WSGI callable."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    try:
        module = importlib.import_module(module_name)
    except ImportError as ex:
        raise SystemExit(f"hio-http: cannot import {module_name!r}: {ex}")
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise SystemExit(f"hio-http: module {module_name!r} has no attribute {attribute!r}")
    if not callable(app):
        raise SystemExit(f"hio-http: {spec!r} is not callable")
    return app


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hio-http", description="Serve a WSGI app on the hio_http doer loop.")
    parser.add_argument("app", nargs="?", default=None,
                        help="the WSGI app as module:attribute (default: the built-in demo)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on")
    parser.add_argument("--bind", type=parse_bind, metavar="HOST:PORT",
                        help="address and port together (overrides --host/--port)")
    parser.add_argument("--tock", type=float, default=0.03125, help="seconds per tick")
    parser.add_argument("--version", action="version", version=f"hio_http {__version__}")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.app is not None and "" not in sys.path:
        sys.path.insert(0, "")  # like python -m: apps in the current directory import
    app = load_app(args.app) if args.app else None
    host, port = args.bind if args.bind else (args.host, args.port)
    server = Server(app, host=host, port=port)
    try:
        server.open()
    except OSError as ex:
        raise SystemExit(f"hio-http: cannot listen on {host}:{port}: {ex.strerror or ex}")
    logger.info("serving %s on %s", args.app or "the demo app", server.url)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends the loop like Ctrl-C: doers exit
    doers = [ServerDoer(server)]
    if app is None:  # the demo's clock feeds its event stream from the same loop
        from . import demo
        doers += demo.doers()
    Doist(tock=args.tock, real=True, doers=doers).do()
    logger.info("stopped")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())

"""The command line: `hio-http [OPTIONS] [module:app]` (also `python -m hio_http`).

A mistake a user can make (an app that does not import, a port in use, a missing certificate)
is reported in one line with a non-zero exit, never a traceback. SIGTERM or SIGINT stop
gracefully (a second one stops at once); SIGHUP reopens log files.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import ssl
import sys
from typing import Optional, Sequence

from .config import ConfigError, gather, parse_bind, settings_from
from .doing import Doist, EndWhen
from .net import listen
from .serving import Server, ServerDoer
from .settings import Settings
from .tuning import keep_freed_memory
from .workers import Supervisor, heartbeat

logger = logging.getLogger("hio_http")


class UsageError(Exception):
    """Reported as one line and exit code 2."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        options = gather(argv)
        configure_logging(options)
        app = load_app(options)
        websockets = load_websockets(options)
        addresses = bind_addresses(options)
        settings = settings_from(options)
        settings["ssl_context"] = tls_context(options)
        Settings(**settings)  # every value checked before anything listens or forks
    except (ConfigError, UsageError, ValueError) as ex:
        print(f"hio-http: error: {ex}", file=sys.stderr)
        return 2
    try:
        sockets = [listen(address, backlog=settings["backlog"],
                          reuse_port=settings["reuse_port"]) for address in addresses]
    except OSError as ex:
        print(f"hio-http: error: cannot listen on {describe(addresses)}: "
              f"{ex.strerror or ex}", file=sys.stderr)
        return 1
    scheme = "https" if settings["ssl_context"] else "http"
    for sock in sockets:
        logger.info("serving %s on %s", options["app"] or "the demo app", url_of(sock, scheme))

    if websockets:
        settings["websockets"] = websockets
    keep_freed_memory()  # before forking workers, so that each inherits it

    def work() -> int:
        return serve(app, sockets, settings, options)

    if options["workers"] > 1:
        supervisor = Supervisor(options["workers"], work, settings["graceful_timeout"],
                                on_hangup=reopen_logs, timeout=settings["timeout"])
        code = supervisor.run()
    else:
        code = work()
    for sock in sockets:
        sock.close()
    for address in addresses:
        if isinstance(address, str) and os.path.exists(address):
            os.unlink(address)
    return code


def serve(app, sockets, settings: dict, options: dict) -> int:
    """Run one loop serving `app` on `sockets` until a signal stops it."""
    doist = Doist(tock=options["tock"], real=True, stall_warning=settings["stall_warning"])
    server = Server(app, poller=doist.poller, sockets=sockets, **settings)
    server.open()
    server_doer = ServerDoer(server)
    doers = [server_doer]
    beat = heartbeat()
    if beat is not None:  # a supervised worker: show the supervisor that the loop turns
        doers.append(beat.doer())
    if options["app"] is None:  # the demo's clock feeds its event stream
        from . import demo
        doers += demo.doers()
    doers.append(EndWhen(doist, lambda: server_doer.done))
    stopper = GracefulStop(server_doer)
    signal.signal(signal.SIGTERM, stopper)
    signal.signal(signal.SIGINT, stopper)
    signal.signal(signal.SIGHUP, lambda signum, frame: reopen_logs())
    doist.do(doers=doers)
    for number in (signal.SIGTERM, signal.SIGINT):  # the loop is over: the rest is quick
        signal.signal(number, signal.SIG_IGN)
    logger.info("stopped (pid %d)", os.getpid())
    return 0


class GracefulStop:
    """Signal handler: the first signal begins a graceful stop, the second stops at once."""

    def __init__(self, server_doer: ServerDoer):
        self.server_doer = server_doer
        self.signalled = False

    def __call__(self, signum, frame) -> None:
        if self.signalled:
            raise KeyboardInterrupt  # the Doist exits every doer, closing all sockets
        self.signalled = True
        logger.info("stopping: finishing requests in flight (signal %d)", signum)
        self.server_doer.stop()


def load_app(options: dict):
    """Import `module:attribute` (attribute defaults to `app`); none named: the demo's app."""
    spec = options["app"]
    if not spec:
        from . import demo
        return demo.app
    _use_app_dir(options)
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    factory = options["factory"] or attribute.endswith("()")
    attribute = attribute.removesuffix("()")
    app = load_object(module_name, attribute)
    if factory:
        if not callable(app):
            raise UsageError(f"factory {spec!r} is not callable")
        try:
            app = app()
        except Exception as ex:
            raise UsageError(f"factory {spec!r} failed: {type(ex).__name__}: {ex}") from None
    if not callable(app):
        raise UsageError(f"{spec!r} is not a WSGI app: {type(app).__name__} is not callable")
    return app


def load_websockets(options: dict) -> dict:
    """`--websocket PATH=module:Handler` entries as {path: handler class} (with the demo's own
    endpoints when no app is named)."""
    endpoints = {}
    if not options["app"]:
        from . import demo
        endpoints.update(demo.websockets)
    for entry in options["websocket"]:
        path, sep, spec = entry.partition("=")
        module_name, colon, attribute = spec.partition(":")
        if not sep or not path.startswith("/") or not colon or not attribute:
            raise UsageError(f"--websocket {entry!r}: expected PATH=module:Handler")
        _use_app_dir(options)
        handler = load_object(module_name, attribute)
        if not callable(handler):
            raise UsageError(f"--websocket {entry!r}: {spec} is not callable")
        endpoints[path] = handler
    return endpoints


def load_object(module_name: str, attribute: str):
    try:
        module = importlib.import_module(module_name)
    except Exception as ex:  # ImportError, or any error raised while the module runs
        raise UsageError(f"cannot import {module_name!r}: {type(ex).__name__}: {ex}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no attribute {attribute!r}") from None


def _use_app_dir(options: dict) -> None:
    app_dir = os.path.abspath(options["app_dir"])
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)


def bind_addresses(options: dict) -> list:
    if options["bind"]:
        return [parse_bind(text) for text in options["bind"]]
    if options["unix"]:
        return [options["unix"]]
    return [(options["host"], options["port"])]


def tls_context(options: dict) -> Optional[ssl.SSLContext]:
    cert, key, ca = options["tls_cert"], options["tls_key"], options["tls_ca"]
    if not cert:
        if key or ca:
            raise UsageError("--tls-key and --tls-ca need --tls-cert")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as ex:
        raise UsageError(f"TLS certificate or key not found: {ex.filename or cert}") from None
    except (OSError, ssl.SSLError) as ex:
        raise UsageError(f"cannot load TLS certificate {cert}: {ex}") from None
    if ca:
        try:
            context.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as ex:
            raise UsageError(f"cannot load TLS CA file {ca}: {ex}") from None
        context.verify_mode = ssl.CERT_OPTIONAL  # ask for client certificates; don't require
    return context


def configure_logging(options: dict) -> None:
    level = str(options["log_level"]).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UsageError(f"unknown log level {options['log_level']!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(process)d %(name)s %(levelname)s "
                                            "%(message)s", stream=sys.stderr)
    access = options["access_log"]
    if access:
        access_logger = logging.getLogger("hio_http.access")
        access_logger.propagate = False
        access_logger.setLevel(logging.INFO)
        try:
            handler = (logging.StreamHandler(sys.stdout) if access == "-"
                       else logging.FileHandler(access))
        except OSError as ex:
            raise UsageError(f"cannot open access log {access}: {ex.strerror or ex}") from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_logger.addHandler(handler)
    options["access_log"] = bool(access)


def reopen_logs() -> None:
    """SIGHUP: reopen every log file (after logrotate moved it away)."""
    for name in ("", "hio_http", "hio_http.access"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    old = handler.setStream(open(handler.baseFilename, handler.mode,
                                                 encoding=handler.encoding))
                    if old is not None:
                        old.close()
                finally:
                    handler.release()


def url_of(sock, scheme: str) -> str:
    address = sock.getsockname()
    if isinstance(address, str):
        return f"{scheme}+unix://{address}"
    host, port = address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


def describe(addresses: list) -> str:
    return ", ".join(a if isinstance(a, str) else f"{a[0]}:{a[1]}" for a in addresses)


if __name__ == "__main__":
    sys.exit(main())

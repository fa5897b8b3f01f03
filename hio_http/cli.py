"""The command line: `hio-http [OPTIONS] [module:app]` (also `python -m hio_http`).

A mistake a user can make (an app that does not import, a port in use, a missing certificate)
is reported in one line with a non-zero exit, never a traceback. SIGTERM or SIGINT stop
gracefully (a second one stops at once); SIGUSR1 reopens log files. With workers (see
workers.py) SIGHUP reloads the app; a single process reopens its log files on SIGHUP too.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import signal
import ssl
import sys
from typing import Optional, Sequence

from .config import ConfigError, gather, parse_bind, settings_from
from .doing import Doist, EndWhen
from .metrics import Board, Metrics, answer_scrape, scrape_handler, scraper
from .net import listen
from .reloading import SourceWatch, app_sources
from .serving import BareServer, Server, ServerDoer
from .settings import Settings
from .tuning import keep_freed_memory
from .workers import APP_FAILED, MAX_SLOTS, RecycleDoer, Supervisor, heartbeat, supervised

logger = logging.getLogger("hio_http")


class UsageError(Exception):
    """Reported as one line and exit code 2."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        options = gather(argv)
        configure_logging(options)
        check_deployment(options)
        supervised_mode = uses_supervisor(options)
        # Workers import the app themselves, after forking, so that each new one (a reload, a
        # replacement) runs the code on disk; a single process imports it here.
        app = None if supervised_mode else load_app(options)
        websockets = None if supervised_mode else load_websockets(options)
        addresses = bind_addresses(options)
        metrics_address = parse_bind(options["metrics_bind"]) if options["metrics_bind"] else None
        settings = settings_from(options)
        settings["ssl_context"] = tls_context(options)
        Settings(**settings)  # every value checked before anything listens or forks
    except (ConfigError, UsageError, ValueError) as ex:
        print(f"hio-http: error: {ex}", file=sys.stderr)
        return 2
    sockets: list = []
    try:
        for address in addresses:
            sockets.append(listen(address, backlog=settings["backlog"],
                                  reuse_port=settings["reuse_port"]))
        if metrics_address is not None:
            addresses.append(metrics_address)
            sockets.append(listen(metrics_address))
    except OSError as ex:
        for sock in sockets:
            sock.close()
        print(f"hio-http: error: cannot listen on {describe(addresses)}: "
              f"{ex.strerror or ex}", file=sys.stderr)
        return 1
    metrics_socket = sockets.pop() if metrics_address is not None else None
    scheme = "https" if settings["ssl_context"] else "http"
    for sock in sockets:
        logger.info("serving %s on %s", options["app"] or "the demo app", url_of(sock, scheme))
    if metrics_socket is not None:
        logger.info("metrics on %s/metrics", url_of(metrics_socket, "http"))
    try:
        try:
            write_pid_file(options["pid"])
        except OSError as ex:
            print(f"hio-http: error: cannot write pid file {options['pid']}: "
                  f"{ex.strerror or ex}", file=sys.stderr)
            return 1
        keep_freed_memory()  # before forking workers, so that each inherits it
        if supervised_mode:
            code = supervise(sockets, settings, options, metrics_socket)
        else:
            if websockets:
                settings["websockets"] = websockets
            board = Board(1) if metrics_socket is not None else None
            code = serve(app, sockets, settings, options, board, metrics_socket)
    finally:
        for sock in sockets + ([metrics_socket] if metrics_socket is not None else []):
            sock.close()
        for address in addresses:
            if isinstance(address, str) and os.path.exists(address):
                os.unlink(address)
        remove_pid_file(options["pid"])
    return code


def uses_supervisor(options: dict) -> bool:
    """Several workers, recycling and reloading need a supervisor; one plain process not."""
    return options["workers"] > 1 or options["max_requests"] > 0 or options["reload"]


def check_deployment(options: dict) -> None:
    for name in ("max_requests", "max_requests_jitter"):
        if options[name] < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, "
                             f"not {options[name]}")
    if options["workers"] < 1:
        raise UsageError(f"--workers must be 1 or more, not {options['workers']}")


def supervise(sockets: list, settings: dict, options: dict, metrics_socket) -> int:
    """Fork workers that each import the app and serve `sockets`; returns the exit code."""
    board = Board(MAX_SLOTS) if metrics_socket is not None else None

    def work() -> int:
        try:
            app = load_app(options)
            websockets = load_websockets(options)
        except UsageError as ex:
            logger.error("worker %d cannot load the app: %s", os.getpid(), ex)
            return APP_FAILED
        worker_settings = dict(settings, websockets=websockets) if websockets else settings
        return serve(app, sockets, worker_settings, options, board)

    listeners: list = []
    supervisor = Supervisor(options["workers"], work, settings["graceful_timeout"],
                            on_reopen=reopen_logs, timeout=settings["timeout"],
                            on_exit=board.retire if board is not None else lambda slot: None,
                            listeners=listeners)
    if metrics_socket is not None:
        assert board is not None  # made whenever metrics are asked for
        metrics_socket.setblocking(False)
        scrape = scraper(board, lambda: [w.slot for w in supervisor.children.values()],
                         lambda: supervisor.restarts)
        listeners.append((metrics_socket, lambda: answer_scrape(metrics_socket, scrape)))
        supervisor.listeners = listeners
    code = supervisor.run()
    if code == APP_FAILED:
        print(f"hio-http: error: the workers cannot load {options['app']} (why is logged "
              "above)", file=sys.stderr)
    return code


def serve(app, sockets, settings: dict, options: dict, board: Optional[Board] = None,
          metrics_socket=None) -> int:
    """Run one loop serving `app` on `sockets` until a signal stops it."""
    doist = Doist(tock=options["tock"], real=True, stall_warning=settings["stall_warning"])
    server = Server(app, poller=doist.poller, sockets=sockets, **settings)
    link = supervised()
    doers: list = []
    metrics: Optional[Metrics] = None
    if board is not None:
        exporter = None
        if metrics_socket is not None:  # a single process answers scrapes on its own loop
            exporter = BareServer(handler=scrape_handler(scraper(board, lambda: [0],
                                                                 lambda: 0)),
                                  poller=doist.poller, sockets=[metrics_socket])
            exporter.open()
        metrics = Metrics(board, link.slot if link is not None else 0, server, exporter)
        server.metrics = metrics  # refreshed on the ServerDoer's turns
    server.open()
    server_doer = ServerDoer(server)
    doers.insert(0, server_doer)
    beat = heartbeat()
    if beat is not None:  # a supervised worker: show the supervisor that the loop turns
        doers.append(beat.doer())
    if link is not None and options["max_requests"]:
        limit = options["max_requests"] + random.randint(0, options["max_requests_jitter"])
        doers.append(RecycleDoer(server, limit, link))
    if link is not None and options["reload"]:
        doers.append(SourceWatch(app_sources(), link.reload))
    if options["app"] is None:  # the demo's clock feeds its event stream
        from . import demo
        doers += demo.doers()
    doers.append(EndWhen(doist, lambda: server_doer.done))
    handle_signals(GracefulStop(server_doer), supervised=link is not None)
    if link is not None:
        link.ready()
    doist.do(doers=doers)
    if metrics is not None:
        metrics.close()  # the last responses count too
    for number in (signal.SIGTERM, signal.SIGINT):  # the loop is over: the rest is quick
        signal.signal(number, signal.SIG_IGN)
    logger.info("stopped (pid %d)", os.getpid())
    return 0


def handle_signals(stopper: "GracefulStop", supervised: bool) -> None:
    """A worker or a single process: SIGTERM / SIGINT stop gracefully, SIGUSR1 reopens logs.
    A single process has no other process to hand its sockets to: SIGHUP reopens its logs
    too, and SIGTTIN / SIGTTOU (which would stop a process by default) are logged."""
    signal.signal(signal.SIGTERM, stopper)
    signal.signal(signal.SIGINT, stopper)
    signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_logs())
    if supervised:  # those are the supervisor's business
        for number in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(number, signal.SIG_IGN)
        return
    signal.signal(signal.SIGHUP, _single_hangup)
    signal.signal(signal.SIGTTIN, _single_resize)
    signal.signal(signal.SIGTTOU, _single_resize)


def _single_hangup(signum, frame) -> None:
    logger.info("SIGHUP: reopening log files (reloading the app needs --workers)")
    reopen_logs()


def _single_resize(signum, frame) -> None:
    logger.warning("signal %d ignored: adding or removing workers needs --workers", signum)


def write_pid_file(path: Optional[str]) -> None:
    """Write this process's id to `path` (through a temporary file: never half-written)."""
    if not path:
        return
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        file.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


def remove_pid_file(path: Optional[str]) -> None:
    """Remove `path` if it still names this process (another may have taken it over)."""
    if not path:
        return
    try:
        with open(path) as file:
            if file.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass


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
    """SIGUSR1: reopen every log file (after logrotate moved it away)."""
    for name in ("", "hio_http", "hio_http.access"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding)
                    old = handler.setStream(stream)  # type: ignore[arg-type]  # stubs too narrow
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

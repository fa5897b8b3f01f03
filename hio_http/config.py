"""Options of the command line, gathered from four places with a fixed precedence:
command line > environment (HIO_HTTP_<OPTION>) > config file (TOML, --config) > defaults.

Every server setting (see settings.py) is an option; a few more belong to the command line only.
Nothing here starts a server.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Mapping, Optional, Sequence

from .build import build_kind
from .version import __version__
from .settings import fields

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "HIO_HTTP_"
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}

# Options of the command line beyond the server settings: (name, type, default, help).
COMMAND_OPTIONS = [
    ("bind", list, [], "HOST:PORT, [IPV6]:PORT or unix:PATH to listen on (repeatable)"),
    ("websocket", list, [], "PATH=module:Handler: a WebSocket endpoint beside the app "
                            "(repeatable)"),
    ("factory", bool, False, "APP names a factory: call it (no arguments) to get the app"),
    ("app_dir", str, ".", "directory to import the app from"),
    ("tls_cert", str, None, "certificate chain file (PEM): serve HTTPS"),
    ("tls_key", str, None, "private key file (PEM) for --tls-cert"),
    ("tls_ca", str, None, "CA file: ask clients for certificates signed by it (optional)"),
    ("workers", int, 1, "number of worker processes (each with its own loop)"),
    ("tock", float, 0.03125, "seconds per tick of the scheduler"),
    ("log_level", str, "info", "debug, info, warning, error or critical"),
    ("access_log", str, None, "write access log lines to this file ('-' for stdout)"),
    ("pid", str, None, "write the (supervisor's) process id to this file once listening; "
                       "removed on exit"),
    ("max_requests", int, 0, "a worker retires gracefully after this many requests, its "
                             "replacement started first (0: never)"),
    ("max_requests_jitter", int, 0, "add a random 0 to this many to --max-requests per "
                                    "worker, so that workers do not retire together"),
    ("reload", bool, False, "development: reload the app when one of its source files "
                            "changes (a file that does not compile is logged, and skipped)"),
    ("metrics_bind", str, None, "HOST:PORT: serve Prometheus metrics of all workers there"),
]


class ConfigError(Exception):
    """A mistake in the options: said in one line, with no traceback."""


# Where the command line's default differs from the library's (which binds a free port).
COMMAND_DEFAULTS = {"port": 8080}


def option_table() -> list:
    """(name, type, default, help) of every option, server settings first."""
    table = []
    for field in fields():
        if not field.metadata.get("cli"):
            continue
        kind = field.type if isinstance(field.type, type) else _type_of(field.default, field.type)
        default = COMMAND_DEFAULTS.get(field.name, field.default)
        table.append((field.name, kind, default, field.metadata["help"]))
    return table + COMMAND_OPTIONS


def _type_of(default: Any, annotation: str) -> type:
    if isinstance(default, bool) or "bool" in str(annotation):
        return bool
    if isinstance(default, int) or "int" in str(annotation):
        return int
    if isinstance(default, float) or "float" in str(annotation):
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hio-http", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve a WSGI app on the hio_http doer loop. Each option can also come from "
                    f"an environment variable {ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}PORT=8000) "
                    "or a TOML config file (--config); the command line wins over the "
                    "environment, which wins over the file.",
        epilog="With no APP, the built-in demo is served.")
    parser.add_argument("app", nargs="?", default=None,
                        help="the WSGI app as module:attribute (attribute defaults to app)")
    parser.add_argument("--config", metavar="FILE", help="TOML file of options")
    parser.add_argument("--version", action="version", version=f"hio_http {__version__} ({build_kind()})")
    for name, kind, default, help_text in option_table():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=f"{help_text} (default: {default})")
        elif kind is list:
            parser.add_argument(flag, dest=name, action="append", default=argparse.SUPPRESS,
                                metavar=name.upper(), help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS,
                                metavar=name.upper(), help=f"{help_text} (default: {default})")
    return parser


def gather(argv: Optional[Sequence[str]] = None,
           environ: Optional[Mapping[str, str]] = None) -> dict:
    """All options, each from the strongest place that sets it."""
    environ = os.environ if environ is None else environ
    table = {name: (kind, default) for name, kind, default, _ in option_table()}
    given = vars(build_parser().parse_args(argv))
    config_path = given.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG")
    options = {name: default for name, (kind, default) in table.items()}
    options["app"] = None
    if config_path:
        options.update(read_config(config_path, table))
    options.update(from_environment(environ, table))
    options.update({name: value for name, value in given.items() if value is not None})
    return options


def read_config(path: str, table: dict) -> dict:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (OSError, tomllib.TOMLDecodeError) as ex:
        raise ConfigError(f"cannot read config file {path}: {ex}") from None
    options = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "app":
            options["app"] = str(value)
            continue
        if name not in table:
            raise ConfigError(f"config file {path}: unknown option {key!r}")
        options[name] = _coerce(name, value, table[name][0], f"config file {path}")
    return options


def from_environment(environ: Mapping[str, str], table: dict) -> dict:
    options = {}
    for name, (kind, _) in table.items():
        value = environ.get(ENV_PREFIX + name.upper())
        if value is not None:
            options[name] = _coerce(name, value, kind, f"{ENV_PREFIX}{name.upper()}")
    if environ.get(ENV_PREFIX + "APP"):
        options["app"] = environ[ENV_PREFIX + "APP"]
    return options


def _coerce(name: str, value: Any, kind: type, source: str) -> Any:
    """Turn a config or environment value into the option's type, or say what is wrong."""
    if kind is list:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [str(part) for part in value]
    elif kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in TRUE | FALSE:
            return str(value).lower() in TRUE
    else:
        try:
            if kind is str and value is not None:
                return str(value)
            return kind(value)
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"{source}: {name} must be {kind.__name__}, got {value!r}")


ADDRESSING = ("host", "port", "unix", "binds")  # the command line turns these into addresses


def settings_from(options: dict) -> dict:
    """The keyword settings of a Server out of the gathered options (addresses aside)."""
    return {field.name: options[field.name] for field in fields()
            if field.name in options and field.name not in ADDRESSING}


def parse_bind(text: str):
    """'HOST:PORT', '[IPV6]:PORT', ':PORT' or 'unix:PATH' -> (host, port) or a path."""
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ConfigError(f"bind {text!r}: a unix socket needs a path")
        return path
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"bind {text!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "0.0.0.0", int(port)

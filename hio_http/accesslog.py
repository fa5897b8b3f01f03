"""Access log lines, one per response, to the `hio_http.access` logger: the common and combined
formats of web servers, or a template with named fields."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("hio_http.access")

FORMATS = {
    "common": '{remote_addr} - - [{time}] "{request_line}" {status} {size}',
    "combined": '{remote_addr} - - [{time}] "{request_line}" {status} {size} "{referer}" '
                '"{user_agent}"',
}
FIELDS = ("remote_addr", "time", "request_line", "method", "target", "protocol", "status",
          "size", "referer", "user_agent", "duration_ms")


class AccessLog:
    """Formats and logs one line per finished response; `format` is a name in FORMATS or a
    template using FIELDS, e.g. "{remote_addr} {method} {target} {status} {duration_ms}"."""

    def __init__(self, format: str = "combined"):
        self.template = FORMATS.get(format, format)
        try:
            self.template.format(**{name: "" for name in FIELDS})
        except (KeyError, IndexError, ValueError) as ex:
            raise ValueError(f"bad access log format {format!r}: unknown or malformed field "
                             f"{ex}; fields are {', '.join(FIELDS)}") from None

    def log(self, peer, responder, started: float) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        request = responder.request
        target = request.target
        version = getattr(request, "version", "1.1")
        header = getattr(request, "header", None)
        fields = {
            "remote_addr": peer[0] if isinstance(peer, tuple) else "unix",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(started)),
            "request_line": f"{request.method} {target} HTTP/{version}",
            "method": request.method, "target": target, "protocol": f"HTTP/{version}",
            "status": responder.status[:3] if responder.status else "-",
            "size": responder.sent if responder.sent else "-",
            "referer": _quoted(header("referer", "-") if header else "-"),
            "user_agent": _quoted(header("user-agent", "-") if header else "-"),
            "duration_ms": f"{(time.time() - started) * 1000:.1f}",
        }
        logger.info(self.template.format(**fields))


def _quoted(value: str) -> str:
    """Escape what could forge a log line or break its quoting."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(
        "\r", "\\r")

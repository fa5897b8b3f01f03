"""The HTTP field grammar that parsers and writers share (RFC 9110 §5): tokens and the
values that may be sent. Written once here; nothing here touches a socket.
"""

from __future__ import annotations

import re

__all__ = ["TOKEN", "is_token", "check_field"]

TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 §5.6.2


def is_token(text: str) -> bool:
    return bool(TOKEN.match(text))


def check_field(name: str, value: str, kind: str = "header") -> None:
    """Refuse a field that would not go out as one line of latin-1 text: a name that is not a
    token, or a value with CR, LF or NUL (header injection and response splitting)."""
    if not is_token(name):
        raise ValueError(f"invalid {kind} name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{kind} {name} must not contain CR, LF or NUL")
    if not value.isascii():
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(f"{kind} {name} is not latin-1 text") from None

"""The HTTP field grammar that parsers and writers share (RFC 9110 §5): tokens and the
values that may be sent. Written once here; nothing here touches a socket.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

__all__ = ["TOKEN", "TOKEN_PATTERN", "QUOTED_STRING_PATTERN", "FIELD_TEXT_PATTERN", "BYTES_LIKE",
           "is_token", "list_members", "field_values", "first_field", "check_field",
           "header_text"]

# Regular-expression sources, for the patterns of the modules that read these rules in context.
TOKEN_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2
# RFC 9110 §5.6.4: qdtext or quoted-pair, obs-text included (latin-1 above 0x7f).
QUOTED_STRING_PATTERN = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9110 §5.5: the bytes a field value may hold, with the whitespace around it.
FIELD_TEXT_PATTERN = r"[\t \x21-\x7e\x80-\xff]*"

TOKEN = re.compile(TOKEN_PATTERN + r"\Z")
BYTES_LIKE = (bytes, bytearray, memoryview)


def is_token(text: str) -> bool:
    return bool(TOKEN.match(text))


def list_members(value: Optional[str]) -> list[str]:
    """The members of a comma-separated list field (RFC 9110 §5.6.1), lower-cased, without the
    whitespace around them; empty members are dropped, as recipients must."""
    if not value:
        return []
    return [member.strip().lower() for member in value.split(",") if member.strip()]


def field_values(fields: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Every value of field `name` (lower-case) in `fields`, in order; field names are
    case-insensitive (RFC 9110 §5.1)."""
    return [value for key, value in fields if key.lower() == name]


def first_field(fields: Iterable[tuple[str, str]], name: str,
                default: Optional[str] = None) -> Optional[str]:
    """The first value of field `name` (lower-case) in `fields`, else `default`."""
    for key, value in fields:
        if key.lower() == name:
            return value
    return default


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


def header_text(name: str, value: object) -> str:
    """A header value as text whose latin-1 encoding is what goes on the wire: str as it is,
    bytes-like as those exact bytes, int in decimal. Anything else is a TypeError, never
    str(value), which would send "bytearray(b'...')" or "None" without a word."""
    if isinstance(value, str):
        return value
    if isinstance(value, BYTES_LIKE):
        return bytes(value).decode("latin-1")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"header {name} value must be str, bytes-like or int, not "
                    f"{type(value).__name__}")

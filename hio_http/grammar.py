"""The HTTP field grammar that parsers and writers share (RFC 9110 §5): tokens and the
values that may be sent. Written once here; nothing here touches a socket.
"""

from __future__ import annotations

import re

__all__ = ["TOKEN", "TOKEN_PATTERN", "QUOTED_STRING_PATTERN", "FIELD_TEXT_PATTERN", "is_token",
           "check_field"]

# Regular-expression sources, for the patterns of the modules that read these rules in context.
TOKEN_PATTERN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2
# RFC 9110 §5.6.4: qdtext or quoted-pair, obs-text included (latin-1 above 0x7f).
QUOTED_STRING_PATTERN = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9110 §5.5: the bytes a field value may hold, with the whitespace around it.
FIELD_TEXT_PATTERN = r"[\t \x21-\x7e\x80-\xff]*"

TOKEN = re.compile(TOKEN_PATTERN + r"\Z")


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

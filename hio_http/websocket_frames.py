"""What the WebSocket server and client share (RFC 6455): the close codes an endpoint may
send, the slice in which compressed input is inflated, and the reassembly of fragmented
messages within a limit. No sockets, no wsproto objects: both sides import it.
"""

from __future__ import annotations

__all__ = ["SENDABLE", "INFLATE_SLICE", "Reassembly"]

# Close codes an endpoint may send (RFC 6455 §7.4.1, IANA registry); 1004-1006 and 1015 are
# reserved for reporting and never go on the wire, 3000-4999 belong to libraries and apps.
SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))

# With permessage-deflate, at most this many received bytes are inflated at once: deflate
# expands at most ~1032:1, so one slice can never make more than ~4 MiB before the running
# message size is checked against `ws_max_message`.
INFLATE_SLICE = 4096


class Reassembly:
    """The fragments of the message being received, within a byte limit (text counted as
    UTF-8), so a message larger than the limit is refused before it is held whole."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list = []
        self.size = 0

    def add(self, data) -> bool:
        """Keep a fragment; False (nothing kept) once the message passes the limit."""
        self.size += len(data) if type(data) is bytes or data.isascii() else len(data.encode())
        if self.size > self.limit:
            self.clear()
            return False
        self.parts.append(data)
        return True

    def take(self):
        """The whole message (str or bytes), and a fresh start for the next one."""
        parts = self.parts
        self.clear()
        return parts[0] if len(parts) == 1 else parts[0][:0].join(parts)

    def clear(self) -> None:
        self.parts, self.size = [], 0

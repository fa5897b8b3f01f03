"""What the hio-shaped server and client share: case-insensitive headers (`Hict`), the one
DeprecationWarning for keywords that mean nothing here, TLS contexts from hio's keywords, and
hio's host rules. Never opens a socket.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Optional

__all__ = ["Hict", "warn_ignored", "server_context", "client_context", "listen_host",
           "external_host"]


class Hict(MutableMapping):
    """Headers keyed case-insensitively, in the order they came, repeats kept (`add`,
    `getall`); `headers[name]` is the first value, as in hio's Hict."""

    def __init__(self, items: Any = None, **more: Any):
        self._items: list = []
        for name, value in _pairs(items):
            self._items.append((name, value))
        for name, value in more.items():
            self._items.append((name, value))

    def __getitem__(self, name: str) -> Any:
        lower = name.lower()
        for key, value in self._items:
            if key.lower() == lower:
                return value
        raise KeyError(name)

    def __setitem__(self, name: str, value: Any) -> None:
        lower = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != lower]
        self._items.append((name, value))

    def __delitem__(self, name: str) -> None:
        lower = name.lower()
        kept = [(k, v) for k, v in self._items if k.lower() != lower]
        if len(kept) == len(self._items):
            raise KeyError(name)
        self._items = kept

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key, _ in self._items:
            if key.lower() not in seen:
                seen.add(key.lower())
                yield key

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._items})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return ({k.lower(): v for k, v in self.items()} ==
                {str(k).lower(): v for k, v in other.items()})

    def __repr__(self) -> str:
        return f"Hict({self._items!r})"

    def add(self, name: str, value: Any) -> None:
        self._items.append((name, value))

    def getall(self, name: str) -> list:
        return [v for k, v in self._items if k.lower() == name.lower()]

    def pairs(self) -> list:
        """Every (name, value), repeats included, in order."""
        return list(self._items)

    def copy(self) -> "Hict":
        return Hict(self._items)


def _pairs(items: Any) -> Iterable:
    if items is None:
        return []
    if isinstance(items, Hict):
        return items.pairs()
    if isinstance(items, Mapping):
        return items.items()
    return items


def warn_ignored(owner: str, names: Iterable[str], depth: int = 1) -> None:
    """One DeprecationWarning naming every hio keyword given that has no meaning here, pointed
    at the caller `depth` frames above the one calling this."""
    names = sorted(names)
    if names:
        warnings.warn(f"{owner}: {', '.join(names)} mean nothing in hio_http and are ignored "
                      f"(see the README, 'Coming from hio')", DeprecationWarning,
                      stacklevel=2 + depth)


def server_context(context: Optional[ssl.SSLContext] = None, version: Any = None,
                   certify: Optional[int] = None, keypath: Optional[str] = None,
                   certpath: Optional[str] = None,
                   cafilepath: Optional[str] = None) -> ssl.SSLContext:
    """A server TLS context from hio's keywords: client certificates are required unless
    `certify` says otherwise (ssl.CERT_NONE / CERT_OPTIONAL), checked against `cafilepath`."""
    if context is None:
        context = (ssl.SSLContext(version) if version else
                   ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
        context.verify_mode = ssl.CERT_REQUIRED if certify is None else ssl.VerifyMode(certify)
    if cafilepath:
        context.load_verify_locations(cafile=cafilepath)
    if keypath or certpath:
        _load_chain(context, certpath, keypath)
    return context


def client_context(context: Optional[ssl.SSLContext] = None, version: Any = None,
                   certify: Optional[int] = None, hostify: Optional[bool] = None,
                   keypath: Optional[str] = None, certpath: Optional[str] = None,
                   cafilepath: Optional[str] = None) -> ssl.SSLContext:
    """A client TLS context from hio's keywords: the server's certificate is verified (against
    `cafilepath`, else the system's CAs) unless `certify` is ssl.CERT_NONE."""
    if context is None:
        context = (ssl.SSLContext(version) if version else
                   ssl.create_default_context(ssl.Purpose.SERVER_AUTH))
        if certify == ssl.CERT_NONE:
            context.check_hostname = False
        if certify is not None:
            context.verify_mode = ssl.VerifyMode(certify)
        if hostify is not None:
            context.check_hostname = bool(hostify)
    if cafilepath:
        context.load_verify_locations(cafile=cafilepath)
    if keypath or certpath:
        _load_chain(context, certpath, keypath)
    return context


def _load_chain(context: ssl.SSLContext, certpath: Optional[str],
                keypath: Optional[str]) -> None:
    if certpath is None:  # the TypeError load_cert_chain(None) raises, with a reason
        raise TypeError("a keypath needs its certpath")
    context.load_cert_chain(certfile=certpath, keyfile=keypath)


def listen_host(host: str) -> str:
    """hio's "" means every IPv4 interface."""
    return host or "0.0.0.0"


def external_host(host: str) -> str:
    """The address a local client reaches a listener on: loopback for a wildcard, as hio's
    `eha`."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "0:0:0:0:0:0:0:0"):
        return "::1"
    return host

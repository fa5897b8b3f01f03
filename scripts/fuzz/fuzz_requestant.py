"""Coverage-guided fuzzing of `Requestant`: bytes in fuzzer-chosen splits, under default or tight
limits; anything raised but `RequestError` (with a status a server can send) is a crash.

    python scripts/fuzz/fuzz_requestant.py -max_total_time=60

Runs under atheris (libFuzzer) when it is installed, else as a plain random mutation fuzzer that
understands -max_total_time, -runs and -seed, and replays the files it is given. See
scripts/fuzz/README.md.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a checkout without installing

try:
    import atheris
except ImportError:
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["hio_http"]):
        from hio_http.requesting import Limits, RequestError, Requestant
else:
    from hio_http.requesting import Limits, RequestError, Requestant

STATUSES = frozenset((400, 413, 414, 417, 431, 501, 505))
DEFAULT = Limits()
TIGHT = Limits(max_request_line=64, max_header_bytes=128, max_header_count=4, max_body=64,
               spill_threshold=32)

# Input layout: byte 0 chooses the limits (bit 7) and how many split sizes follow (bits 0-3);
# each following byte is the size of one piece (0 means 1); the rest is the request stream.
# A stream fed in those pieces must give what the same stream gives fed whole: the same
# requests, and an error in both or neither. Both end with the same blank line (CRLF CRLF),
# which settles two verdicts that legitimately wait for more bytes: a method token still
# arriving (an unknown token is judged at once when its start is unknown, after a request
# that completed mid-feed), and a header section counted only as a lower bound while it is
# open (a head that began mid-feed is counted by its field lines, which httptools reports
# only when the next line starts or the head ends).
# With FUZZ_SAME_STATUS=1 the error's status must match too. It is off by default: after a
# request that completed mid-feed an unknown method gets 400, at a feed boundary 501 (see
# tests/test_requesting_properties.py).
SAME_STATUS = os.environ.get("FUZZ_SAME_STATUS", "") not in ("", "0")


def decode(data: bytes) -> tuple[Limits, list[int], bytes]:
    control = data[0]
    count = control & 0x0F
    sizes = [size or 1 for size in data[1:1 + count]]
    return (TIGHT if control & 0x80 else DEFAULT), sizes, data[1 + count:]


def run(limits: Limits, pieces: list[bytes]) -> tuple:
    """Feed `pieces`; returns what came out, for comparing two ways of feeding."""
    requestant = Requestant(limits)
    status = None
    try:
        for piece in pieces:
            requestant.feed(piece)
        requestant.feed(b"\r\n\r\n")
    except RequestError as error:
        if error.status not in STATUSES:
            raise AssertionError(f"RequestError with status {error.status}: {error}")
        status = error.status
        try:
            requestant.feed(b"x")
        except RequestError as again:
            if again.status != status:
                raise AssertionError(f"error changed from {status} to {again.status}")
        else:
            raise AssertionError("feed() after a RequestError did not raise")
    parsed = []
    for request in requestant.requests:
        body = request.body.read()
        if not request.complete or request.body_size != len(body):
            raise AssertionError("a queued request is incomplete or its body size is wrong")
        if limits.max_body < len(body):
            raise AssertionError(f"a {len(body)}-byte body passed max_body={limits.max_body}")
        parsed.append((request.method, request.target, request.path, request.query,
                       request.version, request.headers, request.trailers, body,
                       request.keep_alive, request.chunked, request.expect_continue,
                       request.upgrade))
    requestant.close()
    return parsed, status, requestant.leftover


def test_one_input(data: bytes) -> None:
    if not data:
        return
    limits, sizes, stream = decode(data)
    pieces, start = [], 0
    for size in sizes:
        if start >= len(stream):
            break
        pieces.append(stream[start:start + size])
        start += size
    pieces.append(stream[start:])
    split = run(limits, pieces)
    whole = run(limits, [stream])
    if not SAME_STATUS:
        split, whole = ((parsed, status is not None, leftover)
                        for parsed, status, leftover in (split, whole))
    if split != whole:
        raise AssertionError(f"feeding in pieces {[len(p) for p in pieces]} gave {split!r}, "
                             f"fed whole {whole!r}")


# ---- without atheris: a plain random mutation fuzzer ----------------------------------------

TOKENS = [b"GET ", b"POST ", b"HEAD ", b"OPTIONS ", b"CONNECT ", b"PRI * HTTP/2.0\r\n\r\n",
          b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", b"\r\n", b"\r\n\r\n", b"\n", b"Host: h\r\n",
          b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
          b"Connection: upgrade\r\nUpgrade: websocket\r\n", b"Expect: 100-continue\r\n",
          b"0\r\n\r\n", b"ffffffff", b";ext=\"v\"", b": ", b"\x00", b"\xff", b"\t", b"%2F",
          b"http://h:80/", b"*", b"?q=1", b"#f", b"99999999999999999999"]


def seeds() -> list[bytes]:
    return [path.read_bytes() for path in sorted((HERE / "seeds").iterdir())]


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    data = bytearray(data or b"\x00")
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        action = rng.randrange(7)
        if action == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif action == 1:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif action == 2:
            del data[at:at + rng.randint(1, 16)]
        elif action == 3:
            data[at:at] = rng.choice(TOKENS)
        elif action == 4:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            data[at:] = other[cut:]
        elif action == 5 and data:
            data[0] = rng.randrange(256)  # other limits and splits
        elif action == 6:
            start = rng.randrange(len(data) + 1)
            data[at:at] = data[start:start + rng.randint(1, 64)] * rng.randint(1, 8)
    return bytes(data[:4096]) or b"\x00"


def option(argv: list[str], name: str, default: int) -> int:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return int(arg.split("=", 1)[1])
    return default


def random_fuzz(argv: list[str]) -> int:
    seconds = option(argv, "max_total_time", 60)
    runs = option(argv, "runs", -1)
    rng = random.Random(option(argv, "seed", int(time.time())))
    corpus = seeds()
    started = time.monotonic()
    count = 0
    print(f"no atheris: random mutation fuzzing for {seconds} s from {len(corpus)} seeds")
    while time.monotonic() - started < seconds and count != runs:
        data = mutate(rng, rng.choice(corpus), corpus)
        count += 1
        try:
            test_one_input(data)
        except Exception as error:
            name = "crash-" + hashlib.sha1(data).hexdigest()
            Path(name).write_bytes(data)
            print(f"CRASH after {count} runs: {error!r}\ninput: {data!r}\nsaved to {name}")
            raise
        if rng.random() < 0.01 and len(corpus) < 5000:
            corpus.append(data)  # keep some mutants to mutate further
    print(f"done: {count} runs in {time.monotonic() - started:.0f} s, no crash")
    return 0


def replay(paths: list[str]) -> int:
    """Run saved inputs (a crash file, a corpus entry) once each; a failing one raises."""
    for path in paths:
        test_one_input(Path(path).read_bytes())
    print(f"replayed {len(paths)} input(s): no crash")
    return 0


def main() -> int:
    argv = list(sys.argv)
    if atheris is None:
        files = [arg for arg in argv[1:] if not arg.startswith("-") and Path(arg).is_file()]
        return replay(files) if files else random_fuzz(argv)
    if not any(arg.startswith("-dict=") for arg in argv[1:]):
        argv.append(f"-dict={HERE / 'http.dict'}")
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # No corpus named: grow a scratch corpus from the seeds, never the seeds themselves.
        argv[1:1] = [tempfile.mkdtemp(prefix="fuzz-requestant-"), str(HERE / "seeds")]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

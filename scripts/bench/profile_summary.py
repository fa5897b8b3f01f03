"""Summarise a `py-spy record --format raw` profile (one "frame;frame;...;leaf count" line per
distinct stack) as Markdown: functions by own time (the leaf of a sample) and by total time
(anywhere on the stack, once per sample).

    python profile_summary.py out/profile.raw.txt
"""

from __future__ import annotations

import collections
import re
import sys

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str, line: bool = False) -> str:
    """`function (path/to/file.py:123)` -> `file.py:function` (with `:123` when `line`),
    the path shortened to the package."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if "/hio_http/" in path:
        path = "hio_http/" + path.rsplit("/hio_http/", 1)[1]
    name = f"{path}:{match.group('function')}"
    return f"{name}:{match.group('line')}" if line and match.group("line") else name


def parse(text: str):
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    lines: collections.Counter = collections.Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        count = int(count)
        raw_frames = [frame for frame in stack.split(";") if frame]
        if not raw_frames:
            continue
        frames = [_name(frame) for frame in raw_frames]
        samples += count
        own[frames[-1]] += count
        lines[_name(raw_frames[-1], line=True)] += count
        for name in set(frames):
            total[name] += count
    return samples, own, total, lines


def summarise(text: str, top: int = 25) -> str:
    samples, own, total, hot_lines = parse(text)
    if not samples:
        return "No samples.\n"
    lines = [f"{samples} samples (busy only: time waiting in epoll is not sampled).", "",
             "### By own time", "", "| own % | function |", "| ---: | --- |"]
    for name, count in own.most_common(top):
        lines.append(f"| {100 * count / samples:.1f} | `{name}` |")
    lines += ["", "### Hottest lines (own time)", "", "| own % | line |", "| ---: | --- |"]
    for name, count in hot_lines.most_common(15):
        lines.append(f"| {100 * count / samples:.1f} | `{name}` |")
    lines += ["", "### By total time (on the stack)", "", "| total % | function |",
              "| ---: | --- |"]
    for name, count in total.most_common(top):
        lines.append(f"| {100 * count / samples:.1f} | `{name}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        print(summarise(handle.read()))

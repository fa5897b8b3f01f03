"""results.json -> results.md: Markdown tables, every figure with its ratio to the two
reference servers of the same run (see servers.REFERENCES)."""

from __future__ import annotations

from typing import Callable, Optional

MIB = 1024 * 1024
REFERENCE_MARKS = ("W", "h")
FEW = 50  # fewer held connections than this make a per-connection memory figure noise  # waitress-4, hio tock=0.001, in the order of the references


def markdown(data: dict) -> str:
    meta, results = data["meta"], data["results"]
    table = Table(results, meta.get("references", []))
    lines = [
        "# hio_http benchmark results", "",
        f"{meta['date']}, {meta['mode']} run: warm-up {meta['warmup_s']} s, "
        f"{meta['repetitions']} × {meta['duration_s']} s per case (medians"
        f"{_rounds(meta.get('rounds', 1))}), idle CPU over "
        f"{meta['idle_window_s']} s. Servers pinned to core {meta['server_core']}, wrk and "
        f"helper clients to core {meta['client_core']}; {meta['cpu']}, Linux {meta['kernel']}, "
        f"Python {meta['python']}, {meta['wrk']}. Total {meta.get('elapsed_s')} s. Load average "
        f"before {meta.get('loadavg_before')}, after {meta.get('loadavg_after')} (anything else "
        "running on the two cores disturbs the figures).", "",
        "Each figure is followed by its ratio to the same figure of "
        + " and of ".join(f"**{ref}** ({mark})" for ref, mark in
                          zip(meta.get("references", []), REFERENCE_MARKS))
        + " in this run: `2.0×W` means twice waitress-4's figure. Higher is better for req/s "
        "and MiB/s, lower for latency, errors, memory and CPU. `other on server / client core` is "
        "the share of the server's core spent on anything but the server, and of the client "
        "core on anything but wrk (kernel work not charged to them, other processes, steal): "
        "when it is high, the figure was disturbed.", "",
        "## Servers", "",
        "| server | version | status | configuration |", "| --- | --- | --- | --- |"]
    for name, info in data["servers"].items():
        status = info.get("status", "")
        if info.get("restarts"):
            status += "; " + "; ".join(info["restarts"])
        lines.append(f"| {name} | {info.get('version', '—')} | {_escape(status)} | "
                     f"{_escape(info.get('note', ''))} |")
    lines += ["", "## Throughput", ""]
    ran = {row["case"] for row in results}
    wrk_cases = [case for case in meta["cases"] if case["kind"] == "wrk" and case["key"] in ran]
    if wrk_cases:
        lines += _summary(table, wrk_cases)
    for case in wrk_cases:
        rows = table.rows(case["key"])
        if not rows:
            continue
        rate = ("MiB/s", "mib_s") if case["transfer"] else ("req/s", "rps")
        lines += ["", f"### {case['title']}", "",
                  f"| server | {rate[0]} | p50 | p99 | errors | RSS MiB | server CPU % "
                  "| CPU µs per request | other on server / client core % |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            line = table.line(row, [(rate[1], _rate), ("p50", _latency), ("p99", _latency),
                                    ("errors", _count), ("rss_kib", _mib),
                                    ("cpu_pct", _percent), ("cpu_us", _one)])
            if row["status"] == "ok":
                server, client = row.get("core_other_pct"), row.get("client_other_pct")
                line += (f" {'—' if server is None else _percent(server)} / "
                         f"{'—' if client is None else _percent(client)} |")
            lines.append(line)
    if table.rows("idle_cpu"):
        lines += ["", "## Idle CPU, no connections", "",
                  "| server | CPU % of a core | RSS MiB |", "| --- | --- | --- |"]
        for row in table.rows("idle_cpu"):
            lines.append(table.line(row, [("cpu_pct", _percent), ("rss_kib", _mib)]))
    for key in ("idle_1k", "idle_10k"):
        rows = table.rows(key)
        if not rows:
            continue
        case = next(case for case in meta["cases"] if case["key"] == key)
        lines += ["", f"## {case['title']}", "",
                  "Opened from a helper process, each having sent one request and read its "
                  "response; `held` is how many were still open, `KiB/conn` the server's RSS "
                  "growth per held connection, `probe` one more request on a new connection "
                  "while they are held.", "",
                  "| server | held | KiB/conn | CPU % | probe ms | RSS MiB | stopped because |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            line = table.line(row, [("held", _count), ("kib_per_conn", _one),
                                    ("cpu_pct", _percent), ("probe_ms", _one),
                                    ("rss_kib", _mib)])
            if row["status"] == "ok":
                reason = row.get("stopped") or ""
                if row.get("probe_error"):
                    reason += f" probe failed: {row['probe_error']}"
                line += f" {_escape(reason.strip()) or '—'} |"
            lines.append(line)
    rows = table.rows("block_probe")
    if rows:
        lines += ["", "## One slow call and everyone else", "",
                  "One request spends 2 s in the app (`/block?ms=2000`); meanwhile `/hello` is "
                  "asked 8 times, each on a new connection: how long did they take?", "",
                  "| server | /hello median ms | /hello max ms | slow call answered |",
                  "| --- | --- | --- | --- |"]
        for row in rows:
            line = table.line(row, [("probe_median_ms", _one), ("probe_max_ms", _one)])
            if row["status"] == "ok":
                line += f" {'yes' if row.get('slow_answered') else 'no'} |"
            lines.append(line)
    rows = table.rows("sse_1k")
    if rows:
        lines += ["", "## 1,000 SSE subscribers, broadcast", "",
                  "Subscribers hold `GET /events` streams; a thread in the server publishes "
                  "when a datagram arrives. `to all` is the median over rounds of the time "
                  "from the trigger until the last subscriber had the event; `burst`: 100 "
                  "events published back to back, deliveries per second until every "
                  "subscriber had them all. Peers: not run (no cooperative streaming).", "",
                  "| server | subscribers | idle CPU % | KiB/subscriber | median ms | to all ms "
                  "| burst deliveries/s | lost |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in rows:
            lines.append(table.line(row, [("held", _count), ("cpu_pct", _percent),
                                          ("kib_per_conn", _one), ("broadcast_median_ms", _one),
                                          ("broadcast_last_ms", _one),
                                          ("burst_deliveries_s", _count),
                                          ("broadcast_lost", _count)]))
    return "\n".join(lines) + "\n"


class Table:
    def __init__(self, results: list, references: list):
        self.results = results
        self.references = references
        self.index = {(row["server"], row["case"]): row for row in results}

    def rows(self, case: str) -> list:
        return [row for row in self.results if row["case"] == case]

    def figure(self, row: dict, key: str, formatter: Callable) -> str:
        value = row.get(key)
        if value is None:
            return "—"
        if key == "kib_per_conn" and row.get("held", 0) < FEW:
            return "— (too few held)"
        if not any((reference, row["case"]) in self.index for reference in self.references):
            return formatter(value)  # no reference ran this case (SSE): nothing to compare
        ratios = []
        for reference, mark in zip(self.references, REFERENCE_MARKS):
            other_row = self.index.get((reference, row["case"]), {})
            other = other_row.get(key)
            if key == "kib_per_conn" and other_row.get("held", 0) < FEW:
                other = None
            ratios.append(_ratio(value, other) + mark)
        return f"{formatter(value)} <sub>{' '.join(ratios)}</sub>"

    def line(self, row: dict, columns: list) -> str:
        if row["status"] != "ok":
            cells = [_escape(row["status"])] + ["—"] * (len(columns) - 1)
        else:
            cells = [self.figure(row, key, formatter) for key, formatter in columns]
        return f"| {row['server']} | " + " | ".join(cells) + " |"


def _summary(table: Table, cases: list) -> list:
    servers = list(dict.fromkeys(row["server"] for row in table.results
                                 if any(row["case"] == case["key"] for case in cases)))
    heads = [case["title"] + (" MiB/s" if case["transfer"] else " req/s") for case in cases]
    lines = ["| server | " + " | ".join(heads) + " |",
             "| --- |" + " --- |" * len(cases)]
    for server in servers:
        cells = []
        for case in cases:
            row = table.index.get((server, case["key"]))
            if row is None:
                cells.append("—")
            elif row["status"] != "ok":
                cells.append(_escape(row["status"]))
            else:
                key = "mib_s" if case["transfer"] else "rps"
                cell = table.figure(row, key, _rate)
                if row.get("errors"):
                    cell += f" ({row['errors']:,} errors)"
                cells.append(cell)
        lines.append(f"| {server} | " + " | ".join(cells) + " |")
    return lines


def _ratio(value, other: Optional[float]) -> str:
    if other is None or value is None or abs(other) < 1e-9:
        return "–"
    ratio = value / other
    if ratio >= 10:
        return f"{ratio:.0f}×"
    if ratio >= 1:
        return f"{ratio:.1f}×"
    return f"{ratio:.2f}×"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _latency(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _count(value) -> str:
    return f"{value:,.0f}"


def _mib(kib) -> str:
    return f"{kib / 1024:.1f}"


def _percent(value) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _one(value) -> str:
    return f"{value:,.1f}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _rounds(rounds: int) -> str:
    return (f"; in {rounds} rounds, the servers taking turns, so that a slow spell of the "
            "machine hits all alike" if rounds > 1 else "")

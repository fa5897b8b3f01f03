"""The bulk tally of noted responses gives what counting each response one by one gives."""

import random
from bisect import bisect_left

import pytest

from hio_http.metrics import (BUCKETS, CLASSES, DURATION_SUM, DURATIONS, GAUGES, METHODS, SENT,
                              Board, Metrics)

STATUSES = ["200 OK", "204 No Content", "304 Not Modified", "404 Not Found", "101 Switching",
            "503 Service Unavailable", ""]


def one_by_one(responses: list) -> list:
    """The counters as a plain loop over each response would fill them."""
    counts = [0.0] * GAUGES
    for seconds, method, status, sent in responses:
        row = METHODS.index(method) if method in METHODS else len(METHODS) - 1
        column = int(status[0]) - 1 if status else CLASSES.index("5xx")
        counts[row * len(CLASSES) + column] += 1
        counts[DURATIONS + bisect_left(BUCKETS, seconds)] += 1
        counts[DURATION_SUM] += seconds
        counts[SENT] += sent
    return counts


def note(metrics: Metrics, responses: list) -> None:
    for response in responses:
        metrics.noted.extend(response)


@pytest.mark.parametrize("methods, statuses", [
    (["GET"], ["200 OK"]),  # one answer throughout
    (["GET"], STATUSES),
    (["GET", "POST", "BREW", "HEAD"], STATUSES),
])
def test_bulk_tally_matches_counting_each_response(methods, statuses):
    chooser = random.Random(7)
    # Durations on the bucket bounds too: a bound counts in its own bucket (le, "at most").
    durations = list(BUCKETS) + [0.0, 0.0004, 0.003, 0.7, 30.0]
    responses = [(chooser.choice(durations), chooser.choice(methods),
                  chooser.choice(statuses), chooser.randrange(10_000))
                 for _ in range(3000)]
    metrics = Metrics(Board(1), 0)
    note(metrics, responses[:1000])
    metrics.fold()
    note(metrics, responses[1000:])
    metrics.publish()  # folds the rest
    expected = one_by_one(responses)
    assert metrics.noted == []
    for index in range(DURATION_SUM):
        assert metrics.counts[index] == expected[index], index
    assert metrics.counts[DURATION_SUM] == pytest.approx(expected[DURATION_SUM])
    assert metrics.counts[SENT] == expected[SENT]
    assert list(metrics.slot[:SENT + 1]) == pytest.approx(metrics.counts[:SENT + 1])

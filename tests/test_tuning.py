"""The command line's malloc tuning: freed memory is kept for reuse instead of being returned
to the kernel and faulted back in on the next request."""

import platform
import subprocess
import sys

import pytest

from hio_http.tuning import keep_freed_memory

# Allocate and free 4 MiB in 1 MiB pieces, as a server holding upload bodies does, and count
# the page faults of the later rounds (the first ones grow the heap whatever the tuning).
CHURN = """
import resource, sys
if sys.argv[1] == "tuned":
    from hio_http.tuning import keep_freed_memory
    assert keep_freed_memory() is not None
def churn():
    pieces = [b"x" * (1 << 20) for _ in range(4)]
    del pieces
for _ in range(5):
    churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode):
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* from the caller's environment
    result = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    untuned, tuned = faults("plain"), faults("tuned")
    # 50 rounds x 4 MiB: a heap trimmed after each round faults ~50 x 1024 pages back in
    assert untuned > 10_000, untuned
    assert tuned < untuned / 20, (tuned, untuned)


def test_a_malloc_variable_in_the_environment_wins():
    assert keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "131072"}) is None
    assert keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}) is None

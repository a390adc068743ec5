"""Wall-clock facts about this process: how long ago it started (for start-up time)."""

import os
import time


def seconds_since_launch() -> float | None:
    """Seconds since the OS started this process (interpreter start-up included).

    Linux: from /proc/self/stat, in clock ticks (10 ms). None where that is not available.
    """
    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime) counts from boot; the command name (field 2) may hold
            # spaces, so split after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def launched_at() -> float | None:
    """The process start as a time.perf_counter() reading (None: unknown)."""
    since = seconds_since_launch()
    return None if since is None else time.perf_counter() - since


_first_job_started = False


def job_started_at() -> float | None:
    """When the calling job started, as a time.perf_counter() reading: the process launch
    for the first job of a process (interpreter start-up and imports are its start-up
    too), the moment of the call for every later one (a sweep's next job in the same
    process starts then, not when the process did)."""
    global _first_job_started
    if not _first_job_started:
        _first_job_started = True
        return launched_at()
    return time.perf_counter()

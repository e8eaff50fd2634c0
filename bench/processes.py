"""Measuring the benchmarks' sides: child processes' CPU time, stopping them, rates."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process `pid` has used so far."""
    # /proc/<pid>/stat: fields 14 and 15 (utime, stime) are the 12th and 13th after "(comm)".
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the child (the daemon stops gracefully), SIGKILL it if it does not exit."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PerRecord:
    """Records/s and CPU microseconds per record of a measured side (a dataclass with
    `records`, `seconds` and `cpu_seconds` fields)."""

    records: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        """Records per wall-clock second."""
        return self.records / self.seconds if self.seconds else float("inf")

    @property
    def cpu_us_per_record(self) -> float:
        """CPU microseconds per record."""
        return self.cpu_seconds / self.records * 1e6 if self.records else 0.0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid`, its exited children it has waited for, and its live descendants.

    For a server that forks a process per connection (PostgreSQL): a backend that exits is
    counted in its parent's cutime/cstime, a live one is read directly."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime are the 12th to 15th fields after "(comm)".
    own = sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    for child in _children(pid):
        # A child that ends meanwhile moves into its parent's cutime: a tick or two lost.
        with contextlib.suppress(OSError):
            own += tree_cpu_seconds(child)
    return own


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread or the process ended meanwhile
            continue
    return children


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (not idle, not waiting on I/O);
    time the VM's host took away (steal) counts as busy."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    # guest time (9th, 10th) is already counted in user and nice.
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")

"""Measuring the benchmarks' sides: child processes' CPU time, stopping them, rates."""

from __future__ import annotations

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

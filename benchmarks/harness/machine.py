"""Machine facts and CPU accounting from /proc (Linux; "?" or NaN where a file cannot be read)."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Machine:
    """What a result depends on besides the code, probed when the benchmark starts."""

    nproc: int
    cpu: str  # /proc/cpuinfo's "model name"
    memory_gib: float  # MemTotal
    python: str
    versions: Mapping[str, str]  # name -> version, in the order asked for
    notes: tuple[str, ...]  # what else the benchmark records, e.g. the disk under test
    load_avg: tuple[float, float, float]

    @classmethod
    def probe(cls, versions: Mapping[str, str] | None = None, notes: Iterable[str] = ()) -> Self:
        return cls(
            nproc=os.cpu_count() or 1,
            cpu=cpu_model(),
            memory_gib=memory_gib(),
            python=platform.python_version(),
            versions=dict(versions or {}),
            notes=tuple(notes),
            load_avg=os.getloadavg(),
        )

    def describe(self) -> str:
        """One line: nproc, CPU, memory, Python, the versions, the notes, the load average."""
        parts = [f"nproc={self.nproc}", f"CPU {self.cpu}", f"{self.memory_gib:.1f} GiB RAM"]
        parts += [f"Python {self.python}", *(f"{name} {version}" for name, version in self.versions.items())]
        parts += self.notes
        parts.append("load avg " + " ".join(f"{x:.2f}" for x in self.load_avg))
        return ", ".join(parts)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB
    except (OSError, ValueError):
        pass
    return math.nan


def package_versions(*distributions: str) -> dict[str, str]:
    """name -> installed version ("?" where it is not installed), for each distribution."""
    out: dict[str, str] = {}
    for name in distributions:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "?"
    return out


def filesystem_of(directory: Path) -> str:
    """The device and filesystem type of the mount holding `directory` (from /proc/mounts), and whether the
    kernel calls the device rotational."""
    best = ("?", "?", "")
    try:
        target = str(directory.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[2]):
                best = (device, fstype, mount)
    except OSError:
        pass
    device, fstype, _ = best
    rotational = ""
    try:
        flag = Path(f"/sys/class/block/{Path(device).name}/queue/rotational").read_text().strip()
        rotational = f", queue/rotational={flag}"
    except OSError:
        pass
    return f"{device} ({fstype}{rotational})"


# ------------------------------------------------------------------------------------------ CPU time


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of its thread `tid`, in seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy, all cores (/proc/stat: everything but idle and iowait)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Cores used during a window (CPU seconds / wall seconds)."""

    started: float  # time.perf_counter() at the window's start
    ended: float
    own: float  # this process, all its threads
    machine: float  # the whole machine (includes `own` and everything watched)
    watched: Mapping[str, float]  # the meter's named processes or threads

    @property
    def wall_s(self) -> float:
        return self.ended - self.started

    def __getitem__(self, name: str) -> float:
        return self.watched[name]

    def other(self, *outside: str) -> float:
        """The rest of the machine: not this process, not the watched processes named here (other
        programs, steal)."""
        return self.machine - self.own - sum(self.watched[name] for name in outside)


class CpuMeter:
    """Reads the CPU seconds of this process, of the machine and of each named reader (for example
    `server=lambda: cpu_seconds(pid)`) at start() and at stop()."""

    def __init__(self, **readers: Callable[[], float]) -> None:
        self._readers = readers
        self._start: tuple[float, float, float, dict[str, float]] | None = None

    def _read(self) -> tuple[float, float, float, dict[str, float]]:
        now, own = time.perf_counter(), time.process_time()
        watched = {name: read() for name, read in self._readers.items()}
        return now, own, machine_busy_seconds(), watched

    def start(self) -> Self:
        self._start = self._read()
        return self

    def stop(self) -> CpuUse:
        if self._start is None:
            raise RuntimeError("CpuMeter.stop() before start()")
        t1, own1, busy1, watched1 = self._read()
        t0, own0, busy0, watched0 = self._start
        wall = t1 - t0
        return CpuUse(
            t0,
            t1,
            (own1 - own0) / wall,
            (busy1 - busy0) / wall,
            {name: (watched1[name] - watched0[name]) / wall for name in watched1},
        )

"""What a station shows between parts: its counters and its last verdict (pushed on every verdict to
`Stations.statuses`, a latest-wins map, not to the status board: parts come too often for the twin)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_runtime.stations.verdict import Verdict


@dataclass(frozen=True, slots=True)
class StationStatus:
    station: str
    cameras: tuple[str, ...]
    parts: int = 0  # verdicts given since the start (repeats of a part id not counted)
    passes: int = 0
    fails: int = 0
    no_verdicts: int = 0
    pending: int = 0  # parts in inspection now
    last: Verdict | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "station": self.station,
            "cameras": list(self.cameras),
            "parts": self.parts,
            "passes": self.passes,
            "fails": self.fails,
            "no_verdicts": self.no_verdicts,
            "pending": self.pending,
            "last": None if self.last is None else self.last.to_dict(),
        }

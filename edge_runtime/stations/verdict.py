"""Value objects of triggered inspection: a Trigger names a part at a station; a Verdict answers it.

A Verdict is published like a defect Event (durable outbox, sinks, history) and reads like one where
the delivery needs it (`id`, `kind`, `camera` = the station, `tag` = the verdict, `roi`,
`captured_at`), so one delivery path carries both (domain.Record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from edge_runtime.domain import EventKind, Prediction

MAX_PREDICTIONS_SHOWN = 20  # per ROI and frame in a verdict's payload (detectors can say a lot)


class VerdictKind(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_VERDICT = "no_verdict"


class NoVerdictReason(StrEnum):
    CAMERA_STALLED = "camera_stalled"  # a camera gave no frame at all before the deadline
    CAMERA_STALE = "camera_stale"  # frames came, but none captured after the trigger
    MODEL_NOT_READY = "model_not_ready"  # no model in service (loading, or failed to load)
    DEADLINE = "deadline"  # frames were taken but inference did not finish in time
    INFERENCE_ERROR = "inference_error"
    BUSY = "busy"  # the station already had max_pending parts in inspection
    SHUTDOWN = "shutdown"  # the runtime stopped while the part was pending


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Trigger:
    station: str
    part_id: str
    received_at: float  # our wall clock when the trigger arrived
    source: str  # http | mqtt | method | opcua
    plc_time: float | None = None  # the sender's own time of the trigger (epoch seconds), if given
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def after(self) -> float:
        """Frames must be captured after this. A PLC time refines the arrival only backwards (the
        trigger cannot be later than its arrival) and only within MAX_PLC_LEAD_S (a PLC clock far
        off must not let old buffered frames in)."""
        if self.plc_time is None:
            return self.received_at
        return max(self.received_at - MAX_PLC_LEAD_S, min(self.plc_time, self.received_at))


MAX_PLC_LEAD_S = 1.0


@dataclass(frozen=True, slots=True)
class RoiEvidence:
    roi: str
    predictions: tuple[Prediction, ...]


@dataclass(frozen=True, slots=True)
class FrameEvidence:
    """One inspected frame of one camera."""

    camera: str
    captured_at: float
    sequence: int
    rois: tuple[RoiEvidence, ...]


@dataclass(frozen=True, slots=True)
class Defect:
    """A defect rule that held: `votes` of the frames showed `tag` at `probability` or above."""

    tag: str
    probability: float  # the highest seen
    votes: int
    needed: int
    camera: str  # where the highest was seen
    roi: str


@dataclass(frozen=True, slots=True)
class Verdict:
    id: str  # the event id (ULID): unique, sortable by time
    station: str
    part_id: str
    verdict: VerdictKind
    reason: NoVerdictReason | None
    detail: str  # one line for people: why, in words
    defects: tuple[Defect, ...]
    frames: tuple[FrameEvidence, ...]
    triggered_at: float  # Trigger.received_at
    decided_at: float
    source: str
    model_id: str | None
    model_sha1: str | None
    plc_time: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    snapshots: tuple[str, ...] = ()  # URL paths, one per camera (its last inspected frame)

    # ---- what the delivery and the history read (domain.Record) -----------------------------------
    @property
    def kind(self) -> EventKind:
        return EventKind.VERDICT

    @property
    def camera(self) -> str:
        return self.station

    @property
    def tag(self) -> str:
        return self.verdict.value

    @property
    def roi(self) -> str:
        return ""

    @property
    def captured_at(self) -> float:
        return self.triggered_at

    @property
    def latency_s(self) -> float:
        return self.decided_at - self.triggered_at

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": EventKind.VERDICT.value,
            "station": self.station,
            "part_id": self.part_id,
            "verdict": self.verdict.value,
            "reason": None if self.reason is None else self.reason.value,
            "detail": self.detail,
            "defects": [
                {
                    "tag": d.tag,
                    "probability": round(d.probability, 6),
                    "votes": d.votes,
                    "needed": d.needed,
                    "camera": d.camera,
                    "roi": d.roi,
                }
                for d in self.defects
            ],
            "triggered_at": iso(self.triggered_at),
            "plc_time": iso(self.plc_time),
            "decided_at": iso(self.decided_at),
            "latency_ms": round(self.latency_s * 1000, 1),
            "source": self.source,
            "metadata": dict(self.metadata),
            "model": None if self.model_id is None else {"id": self.model_id, "sha1": self.model_sha1},
            "frames": [_frame_dict(f) for f in self.frames],
            "snapshot": self.snapshots[0] if self.snapshots else None,
            "snapshots": list(self.snapshots),
        }

    def detail_dict(self) -> dict[str, object]:
        return self.to_dict()


def _frame_dict(frame: FrameEvidence) -> dict[str, object]:
    return {
        "camera": frame.camera,
        "captured_at": iso(frame.captured_at),
        "sequence": frame.sequence,
        "rois": [
            {
                "roi": r.roi,
                "predictions": [
                    p.to_dict()
                    for p in sorted(r.predictions, key=lambda p: -p.probability)[:MAX_PREDICTIONS_SHOWN]
                ],
            }
            for r in frame.rois
        ],
    }

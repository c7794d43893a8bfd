"""When a frame was captured, by the stream's own clock where the camera gives one.

Arrival time hides buffering: frames FFmpeg held in its buffers (during the open's probing, behind a
slow network) arrive together and would all look fresh. The stream's timestamps do not:

- `rtcp`: the camera's wall clock, from RTCP sender reports (FFmpeg's `start_time_realtime`, known a
  few seconds into an RTSP session) plus the frame's PTS. Trusted only while it agrees with ours
  within MAX_SKEW_S: a camera without NTP must not make every frame look minutes old.
- `pts`: the PTS anchored to our clock at the earliest arrival seen (`arrival - pts` at its minimum,
  the least-delayed frame). The anchor creeps forward by CREEP (1 ms a second, faster than any
  camera's clock drifts) so a slow camera clock does not age frames over days; a sudden delay shows in
  full and is absorbed only at that rate. A PTS that goes backwards (a restart) re-anchors.
- `arrival`: our clock when the decoder handed the frame over (files, streams without timestamps).

A captured time is never later than the arrival: a frame cannot be from the future.

`pts` runs late by the stream's least delay (encode, network, decode), and right after an open the
first frames arrive in a burst (FFmpeg's probing backlog), so the anchor is too late until prompt frames
have come: `settled(arrival)` says whether SETTLE_S have passed since the anchor was set. Stations take
only settled frames, and a margin on clocks other than `rtcp` (StationSettings.clock_margin_ms).
"""

from __future__ import annotations

from enum import StrEnum

MAX_SKEW_S = 10.0
CREEP = 1e-3
SETTLE_S = 2.0


class ClockSource(StrEnum):
    RTCP = "rtcp"
    PTS = "pts"
    ARRIVAL = "arrival"


class StreamClock:
    def __init__(self) -> None:
        self._offset: float | None = None  # arrival - pts, at its (creeping) minimum
        self._anchored_at = 0.0
        self._last_pts: float | None = None
        self._anchor_set_at: float | None = None  # arrival when the current anchor was first set

    def captured_at(
        self, pts_s: float | None, arrival: float, realtime_start_s: float | None = None
    ) -> tuple[float, ClockSource]:
        if pts_s is None:
            return arrival, ClockSource.ARRIVAL
        if self._last_pts is not None and pts_s < self._last_pts:
            self._offset = None  # the stream's clock restarted
        self._last_pts = pts_s
        if realtime_start_s is not None:
            at = realtime_start_s + pts_s
            if abs(arrival - at) <= MAX_SKEW_S:
                return min(at, arrival), ClockSource.RTCP
        offset = arrival - pts_s
        if self._offset is None:
            self._offset = offset
            self._anchor_set_at = arrival
        else:
            crept = self._offset + CREEP * max(0.0, arrival - self._anchored_at)
            self._offset = min(crept, offset)
        self._anchored_at = arrival
        return min(pts_s + self._offset, arrival), ClockSource.PTS

    def settled(self, arrival: float, source: ClockSource) -> bool:
        """Whether a frame timed by `source` at `arrival` has a trustworthy capture time (see above)."""
        if source is not ClockSource.PTS:
            return True
        return self._anchor_set_at is not None and arrival - self._anchor_set_at >= SETTLE_S

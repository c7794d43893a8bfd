"""When a frame was captured, from the stream's clock: RTCP wall time when the camera's is sane, the PTS
anchored to the least-delayed arrival otherwise, arrival time without timestamps; never in the future."""

from __future__ import annotations

import itertools
import random

import pytest

from edge_runtime.sources.stream_clock import CREEP, MAX_SKEW_S, SETTLE_S, ClockSource, StreamClock

T0 = 1_700_000_000.0  # our wall clock when the stream's PTS was 0 (plus whatever delay each frame had)
FRAME_S = 0.04


def test_without_a_pts_the_arrival_is_the_capture_time() -> None:
    clock = StreamClock()
    assert clock.captured_at(None, T0 + 1.0) == (T0 + 1.0, ClockSource.ARRIVAL)
    # even when the camera's realtime start is known: there is nothing to add it to
    assert clock.captured_at(None, T0 + 2.0, realtime_start_s=T0) == (T0 + 2.0, ClockSource.ARRIVAL)


def test_rtcp_in_range_gives_the_cameras_wall_time() -> None:
    clock = StreamClock()
    # the camera's clock says pts 0 was at T0; the frame arrives 80 ms after it was captured
    assert clock.captured_at(5.0, T0 + 5.08, realtime_start_s=T0) == (T0 + 5.0, ClockSource.RTCP)
    # up to MAX_SKEW_S of disagreement is believed: the frame is shown that old
    at, source = clock.captured_at(6.0, T0 + 6.0 + MAX_SKEW_S, realtime_start_s=T0)
    assert (at, source) == (T0 + 6.0, ClockSource.RTCP)


@pytest.mark.parametrize(
    "skew", [MAX_SKEW_S + 0.5, -(MAX_SKEW_S + 0.5), 3600.0], ids=["behind", "ahead", "hour"]
)
def test_rtcp_skewed_beyond_max_skew_falls_back_to_the_pts(skew: float) -> None:
    """A camera without NTP must not make every frame look minutes old (or from the future)."""
    clock = StreamClock()
    realtime_start = T0 - skew
    first = clock.captured_at(10.0, T0 + 10.05, realtime_start_s=realtime_start)
    assert first[1] is ClockSource.PTS
    assert first[0] == pytest.approx(T0 + 10.05, abs=1e-6)  # anchored at this arrival
    second = clock.captured_at(10.04, T0 + 10.12, realtime_start_s=realtime_start)
    assert second[1] is ClockSource.PTS
    # 30 ms more delay than the first shows (less the creep over the 70 ms between the arrivals)
    assert second[0] == pytest.approx(T0 + 10.09 + CREEP * 0.07, abs=1e-6)


def test_rtcp_ahead_of_our_clock_is_capped_at_the_arrival() -> None:
    clock = StreamClock()
    # the camera's clock runs 2 s ahead (within MAX_SKEW_S): the frame would be from the future
    assert clock.captured_at(3.0, T0 + 3.0, realtime_start_s=T0 + 2.0) == (T0 + 3.0, ClockSource.RTCP)


def test_pts_anchors_to_the_least_delayed_arrival() -> None:
    clock = StreamClock()
    delays = [0.30, 0.12, 0.05, 0.20, 0.05, 0.08]  # network/decoder delay of each frame
    results = []
    for i, delay in enumerate(delays):
        pts = i * FRAME_S
        results.append(clock.captured_at(pts, T0 + pts + delay))
    assert {source for _, source in results} == {ClockSource.PTS}
    arrivals = [T0 + i * FRAME_S + delay for i, delay in enumerate(delays)]
    ages = [arrival - at for arrival, (at, _) in zip(arrivals, results, strict=True)]
    # each frame looks as delayed as it was beyond the least delay seen so far (less a creep of < 0.2 ms)
    assert ages == pytest.approx([0.0, 0.0, 0.0, 0.15, 0.0, 0.03], abs=2e-4)
    assert ages[3] == pytest.approx(0.15 - CREEP * (arrivals[3] - arrivals[2]), abs=1e-6)


def test_a_sudden_buffering_delay_shows_as_age() -> None:
    clock = StreamClock()
    steady = T0
    for i in range(250):  # 10 s of frames with 20 ms delay
        pts = i * FRAME_S
        steady = T0 + pts + 0.02
        clock.captured_at(pts, steady)
    # then the network buffers: frames arrive 1.5 s later than before, and keep doing so for a second
    for i in range(250, 275):
        pts = i * FRAME_S
        arrival = T0 + pts + 1.52
        at, source = clock.captured_at(pts, arrival)
        assert source is ClockSource.PTS
        # shown in full, less only the creep since the last on-time frame (CREEP per second)
        # (to 0.1 ms: the anchor is a wall-clock time, where a float resolves 0.24 µs per creep step)
        assert arrival - at == pytest.approx(1.5 - CREEP * (arrival - steady), abs=1e-4), i


def test_the_creep_absorbs_a_lasting_delay_at_most_creep_per_second() -> None:
    clock = StreamClock()
    clock.captured_at(0.0, T0)
    ages = []
    for second in range(1, 3001):  # a camera whose frames arrive 2 s late from now on, for 50 min
        arrival = T0 + second + 2.0
        at, _ = clock.captured_at(float(second), arrival)
        ages.append(arrival - at)
    assert ages[0] == pytest.approx(2.0 - CREEP * 3.0, abs=1e-6)
    steps = [before - after for before, after in itertools.pairwise(ages)]
    assert all(step <= CREEP * 1.0 + 1e-6 for step in steps), max(steps)
    assert ages[999] == pytest.approx(2.0 - CREEP * 1002, abs=1e-3)  # the creep is steady, never a jump
    assert ages[-1] == pytest.approx(0.0, abs=1e-6)  # absorbed in full after 2 s / CREEP, and no further
    assert min(ages) >= 0.0


@pytest.mark.parametrize("drift", [1e-4, -1e-4], ids=["camera-slow", "camera-fast"])
def test_a_drifting_camera_clock_does_not_age_frames(drift: float) -> None:
    """100 ppm (8.6 s a day) is far more than a camera drifts; the creep (1000 ppm) outruns it."""
    clock = StreamClock()
    worst = 0.0
    for i in range(0, 86_400, 10):  # a day, a frame every 10 s
        arrival = T0 + i
        pts = i * (1 - drift)
        at, _ = clock.captured_at(pts, arrival)
        worst = max(worst, arrival - at)
    assert worst < 0.01, worst


def test_a_pts_going_backwards_re_anchors() -> None:
    clock = StreamClock()
    for i in range(100):
        clock.captured_at(1000.0 + i * FRAME_S, T0 + i * FRAME_S)
    # the camera restarted: its PTS begins at 0 again, frames arrive as fresh as before (not 1000 s old)
    restart = T0 + 10.0
    at, source = clock.captured_at(0.0, restart)
    assert source is ClockSource.PTS and at == pytest.approx(restart, abs=1e-6)
    arrival = restart + FRAME_S + 0.01
    at, _ = clock.captured_at(FRAME_S, arrival)
    assert arrival - at == pytest.approx(0.01 - CREEP * (FRAME_S + 0.01), abs=1e-6)


def test_a_pts_going_backwards_re_anchors_through_rtcp_frames() -> None:
    clock = StreamClock()
    for i in range(100):  # anchored on the PTS, before the first sender report
        clock.captured_at(1000.0 + i * FRAME_S, T0 + i * FRAME_S)
    realtime = T0 - 1000.0
    for i in range(100, 110):  # then the camera's wall clock is known
        at, source = clock.captured_at(1000.0 + i * FRAME_S, T0 + i * FRAME_S + 0.03, realtime)
        assert source is ClockSource.RTCP and at == pytest.approx(T0 + i * FRAME_S, abs=1e-6)
    # the camera restarts its PTS; the old sender report now maps it 1000 s back: skewed, so the PTS
    # is anchored afresh, not on the old stream's offset
    at, source = clock.captured_at(0.0, T0 + 60.0, realtime)
    assert source is ClockSource.PTS and at == pytest.approx(T0 + 60.0, abs=1e-6)


def test_a_capture_time_is_never_later_than_the_arrival() -> None:
    """Random streams: PTS jitter and jumps (both ways), delays, RTCP on and off, good and skewed."""
    rng = random.Random(20261124)
    for _ in range(50):
        clock = StreamClock()
        pts, arrival = rng.uniform(0, 1e5), T0
        realtime: float | None = None
        for _ in range(200):
            pts += rng.choice([FRAME_S, FRAME_S, FRAME_S, rng.uniform(-5, 5), 0.0])
            arrival += rng.uniform(0.0, 0.2)
            if rng.random() < 0.05:
                realtime = rng.choice([None, arrival - pts, arrival - pts + rng.uniform(-30, 30)])
            at, source = clock.captured_at(max(pts, 0.0), arrival, realtime)
            assert at <= arrival, (pts, arrival, realtime, at, source)
            if source is ClockSource.RTCP:
                assert realtime is not None and abs(arrival - (realtime + max(pts, 0.0))) <= MAX_SKEW_S


def test_a_pts_anchor_is_settled_only_after_settle_s() -> None:
    clock = StreamClock()
    assert clock.settled(100.0, ClockSource.RTCP) and clock.settled(100.0, ClockSource.ARRIVAL)
    assert not clock.settled(100.0, ClockSource.PTS)  # no anchor yet
    clock.captured_at(5.0, 100.0)
    assert not clock.settled(101.0, ClockSource.PTS)  # the open's backlog may still be draining
    assert clock.settled(100.0 + SETTLE_S, ClockSource.PTS)
    clock.captured_at(0.0, 103.0)  # the stream's clock restarted: a new anchor
    assert not clock.settled(103.5, ClockSource.PTS)

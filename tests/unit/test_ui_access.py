"""The operator page's building blocks, without a server: which role a key gives (admin first, constant
time, odd bytes never crash), login sessions (ttl, the MAX_SESSIONS bound, drop), masked_tree (what the
config page may show), Latest (coalescing latest-wins map: a slow reader sees the newest only, every
reader is woken), RuleEngine.states() (what the camera view draws), FrameJpegs (one encode per frame
and size however many ask; the rate cap) and the ui.* settings' validation."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import SecretStr, ValidationError

from edge_runtime.domain import Frame, Prediction
from edge_runtime.errors import ConfigError
from edge_runtime.events.rules import RuleEngine, RuleState
from edge_runtime.latest import Latest
from edge_runtime.redact import MASK, masked_tree
from edge_runtime.settings import RuleSettings, Settings, UiSettings, build_settings
from edge_runtime.sources.inspections import Inspection
from edge_runtime.ui import access, frames
from edge_runtime.ui.access import MAX_SESSIONS, Role, Sessions, role_for_key
from edge_runtime.ui.frames import FrameJpegs, width_for

ADMIN_KEY = "admin-key-0123456789"
VIEWER_KEY = "viewer-key-0123456789"


class Clock:
    """A monotonic clock that stands still until moved."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def access_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock Sessions reads (only the access module's `time`, not asyncio's)."""
    clock = Clock()
    monkeypatch.setattr(access, "time", SimpleNamespace(monotonic=clock))
    return clock


@pytest.fixture
def frames_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(frames, "time", SimpleNamespace(monotonic=clock))
    return clock


def keyed_settings(admin: str | None = ADMIN_KEY, viewer: str | None = VIEWER_KEY) -> Settings:
    return build_settings({"server": {"admin_key": admin}, "ui": {"viewer_key": viewer}})


# ---- role_for_key ---------------------------------------------------------------------------------


def test_each_key_gives_its_role_and_anything_else_none() -> None:
    settings = keyed_settings()
    assert role_for_key(settings, ADMIN_KEY) is Role.ADMIN
    assert role_for_key(settings, VIEWER_KEY) is Role.VIEWER
    for wrong in ("", "admin-key", ADMIN_KEY + "x", ADMIN_KEY[:-1], VIEWER_KEY.upper(), " " + VIEWER_KEY):
        assert role_for_key(settings, wrong) is None, wrong


def test_the_admin_key_is_tried_first() -> None:
    # One key for both: the stronger role wins (an admin must never be cut down to a viewer).
    assert role_for_key(keyed_settings(ADMIN_KEY, ADMIN_KEY), ADMIN_KEY) is Role.ADMIN


def test_no_keys_configured_lets_no_key_in() -> None:
    settings = keyed_settings(None, None)
    assert role_for_key(settings, ADMIN_KEY) is None
    assert role_for_key(settings, "") is None
    only_viewer = keyed_settings(None, VIEWER_KEY)
    assert role_for_key(only_viewer, VIEWER_KEY) is Role.VIEWER
    assert role_for_key(only_viewer, ADMIN_KEY) is None


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)  # what access.py calls
    assert role_for_key(keyed_settings(), VIEWER_KEY) is Role.VIEWER
    # Both keys went through compare_digest, as bytes (never ==, which stops at the first difference).
    assert compared == [
        (VIEWER_KEY.encode(), ADMIN_KEY.encode()),
        (VIEWER_KEY.encode(), VIEWER_KEY.encode()),
    ]


@pytest.mark.parametrize(
    "given",
    [
        "ключ-администратора",  # UTF-8 bytes in the header, decoded
        "\udcff\udcfe\udc80",  # aiohttp keeps bytes that are not UTF-8 as surrogate escapes
        "Bearer\x00\x7f\t",
        "é" * 5000,
    ],
)
def test_odd_header_bytes_are_a_wrong_key_not_a_crash(given: str) -> None:
    assert role_for_key(keyed_settings(), given) is None


def test_a_non_ascii_key_matches_its_utf8_bytes() -> None:
    key = "ключ-ключ-ключ"  # 12+ characters
    settings = keyed_settings(key, VIEWER_KEY)
    assert role_for_key(settings, key) is Role.ADMIN
    # Compared as UTF-8 bytes: the same bytes mis-decoded as latin-1 are another key.
    assert role_for_key(settings, key.encode().decode("latin-1")) is None


def test_a_lone_surrogate_from_a_json_body_is_a_wrong_key() -> None:
    # JSON's "\ud800" (a login body) is a lone surrogate that surrogateescape cannot encode.
    assert role_for_key(keyed_settings(), "\ud800" + VIEWER_KEY) is None
    assert role_for_key(keyed_settings(), "\udfff\ud800") is None


# ---- sessions -------------------------------------------------------------------------------------


def test_a_session_is_found_by_its_token_until_its_ttl(access_clock: Clock) -> None:
    sessions = Sessions(ttl_s=60.0)
    viewer = sessions.create(Role.VIEWER)
    admin = sessions.create(Role.ADMIN)
    assert viewer.role is Role.VIEWER and admin.role is Role.ADMIN
    assert len({viewer.token, viewer.csrf, admin.token, admin.csrf}) == 4, "tokens and CSRF tokens differ"
    assert all(len(t) >= 32 for t in (viewer.token, viewer.csrf))
    assert sessions.get(viewer.token) == viewer
    assert sessions.get(admin.token) == admin
    assert sessions.get("not-a-token") is None
    assert sessions.get(viewer.csrf) is None, "the CSRF token is no session token"

    access_clock.now += 59.9
    assert sessions.get(viewer.token) == viewer
    access_clock.now += 0.1  # exactly the ttl: over
    assert sessions.get(viewer.token) is None
    assert sessions.get(admin.token) is None
    access_clock.now -= 30  # an expired session is gone for good, not merely hidden
    assert sessions.get(viewer.token) is None


def test_sessions_are_bounded_and_the_oldest_go_first(access_clock: Clock) -> None:
    sessions = Sessions(ttl_s=3600.0)
    made = [sessions.create(Role.VIEWER) for _ in range(MAX_SESSIONS + 3)]
    assert [sessions.get(s.token) for s in made[:3]] == [None, None, None]
    for session in made[3:]:
        assert sessions.get(session.token) == session
    assert len(sessions._by_token) == MAX_SESSIONS


def test_drop_ends_one_session(access_clock: Clock) -> None:
    sessions = Sessions(ttl_s=3600.0)
    one, other = sessions.create(Role.ADMIN), sessions.create(Role.VIEWER)
    sessions.drop(one.token)
    sessions.drop(one.token)  # twice, or an unknown token: harmless
    sessions.drop("unknown")
    assert sessions.get(one.token) is None
    assert sessions.get(other.token) == other


# ---- masked_tree ----------------------------------------------------------------------------------


def test_masked_tree_hides_secrets_and_url_credentials() -> None:
    tree = {
        "server": {"admin_key": SecretStr("admin-secret-1"), "port": 8080, "prediction_key": None},
        "ui": {"viewer_key": "viewer-secret-2", "enabled": True},
        "model": {"url": SecretStr("https://blob/m.zip?sig=model-secret-3"), "path": "/models/x"},
        "hub": {"connection_string": "HostName=h;SharedAccessKey=hub-secret-4"},
        "cameras": {
            "door": {
                "url": "rtsp://user:camera-secret-5@cam.local:554/stream?token=camera-secret-6",
                "detect_url": "rtsp://other:camera-secret-7@cam.local/sub",
                "fps": 2.0,
                "rules": [{"tag": "*", "k": 2}],
            }
        },
        "sinks": {"mqtt": {"password": "mqtt-secret-8", "username": "line1", "host": "broker"}},
        "list": [[{"password": "nested-secret-9"}], ("tuple", {"image_url": "http://u:nested-secret-10@h/"})],
        "empty": {"password": "", "viewer_key": None},
    }
    masked = masked_tree(tree)
    text = repr(masked)
    for n in range(1, 11):
        assert f"secret-{n}" not in text, (n, text)
    assert isinstance(masked, dict)
    assert masked["server"] == {"admin_key": MASK, "port": 8080, "prediction_key": None}
    assert masked["ui"] == {"viewer_key": MASK, "enabled": True}
    assert masked["model"] == {"url": MASK, "path": "/models/x"}
    door = masked["cameras"]["door"]
    # A URL keeps what tells cameras apart (scheme, host, port, path), not the userinfo or query.
    assert door["url"] == "rtsp://***@cam.local:554/stream?***"
    assert door["detect_url"] == "rtsp://***@cam.local/sub"
    assert door["fps"] == 2.0 and door["rules"] == [{"tag": "*", "k": 2}]
    assert masked["sinks"]["mqtt"] == {"password": MASK, "username": "line1", "host": "broker"}
    assert masked["list"] == [[{"password": MASK}], ["tuple", {"image_url": "http://***@h/"}]]
    # Nothing to hide is shown as it is (an unset key stays visibly unset).
    assert masked["empty"] == {"password": "", "viewer_key": None}
    assert masked_tree(SecretStr("bare-secret")) == MASK
    assert masked_tree([SecretStr("x"), 1, None]) == [MASK, 1, None]


def test_masked_tree_leaves_the_input_alone() -> None:
    tree = {"cameras": {"c": {"url": "rtsp://u:p@h/x"}}, "password": "p"}
    masked_tree(tree)
    assert tree == {"cameras": {"c": {"url": "rtsp://u:p@h/x"}}, "password": "p"}


# ---- Latest ---------------------------------------------------------------------------------------


async def test_latest_put_get_remove() -> None:
    latest: Latest[str, int] = Latest()
    assert latest.get("a") is None and latest.all() == {}
    latest.put("a", 1)
    latest.put("b", 2)
    latest.put("a", 3)
    assert latest.get("a") == 3 and latest.all() == {"a": 3, "b": 2}
    snapshot = latest.all()
    snapshot["c"] = 4  # a copy
    assert latest.get("c") is None
    latest.remove("b")
    latest.remove("missing")
    assert latest.all() == {"a": 3}


async def next_within(changes: Any, seconds: float = 1.0) -> dict[str, int]:
    async with asyncio.timeout(seconds):
        value: dict[str, int] = await anext(changes)
        return value


async def test_a_slow_reader_sees_only_the_newest_state() -> None:
    latest: Latest[str, int] = Latest()
    latest.put("a", 1)
    async with contextlib.aclosing(latest.changes()) as changes:
        assert await next_within(changes) == {"a": 1}, "the state now, at once"
        for n in range(2, 50):  # many changes while the reader is busy
            latest.put("a", n)
        latest.put("b", 7)
        latest.remove("b")
        latest.put("c", 9)
        assert await next_within(changes) == {"a": 49, "c": 9}, "one wake-up with the newest values"
        with pytest.raises(TimeoutError):  # nothing new: no backlog of stale states follows
            await next_within(changes, 0.1)


async def test_putting_the_same_value_wakes_nobody() -> None:
    latest: Latest[str, int] = Latest()
    latest.put("a", 1)
    async with contextlib.aclosing(latest.changes()) as changes:
        await next_within(changes)
        latest.put("a", 1)
        latest.remove("gone")
        with pytest.raises(TimeoutError):
            await next_within(changes, 0.1)


async def test_every_waiting_reader_is_woken() -> None:
    latest: Latest[str, int] = Latest()
    async with contextlib.aclosing(latest.changes()) as one, contextlib.aclosing(latest.changes()) as two:
        assert await next_within(one) == {} and await next_within(two) == {}
        waiting = [asyncio.ensure_future(next_within(one)), asyncio.ensure_future(next_within(two))]
        await asyncio.sleep(0.01)  # both are waiting now
        assert not any(task.done() for task in waiting)
        latest.put("a", 1)
        assert await asyncio.gather(*waiting) == [{"a": 1}, {"a": 1}]
        # ... and again: the first reader's clear() must not swallow the second one's next wake-up.
        first = asyncio.ensure_future(next_within(one))
        await asyncio.sleep(0.01)
        latest.put("a", 2)
        assert await first == {"a": 2}
        assert await next_within(two) == {"a": 2}


# ---- RuleEngine.states() ----------------------------------------------------------------------------


def test_rule_states_follow_the_window_and_the_episode() -> None:
    rules = (
        RuleSettings(tag="stain", k=2, n=3, clear_after=2, cooldown_s=0),
        RuleSettings(tag="glare", k=1, n=2),
    )
    engine = RuleEngine(rules, ("stain", "glare", "ok"))
    assert engine.states() == ()
    stain = (Prediction("stain", 0.9),)
    engine.evaluate("left", stain, 1.0)
    assert engine.states() == (
        RuleState("left", "stain", False, 1, 3, 2),
        RuleState("left", "glare", False, 0, 2, 1),
    ), "every ruled tag in first-seen order; 'ok' has no rule"
    engine.evaluate("right", (), 1.0)
    engine.evaluate("left", (*stain, Prediction("glare", 0.2)), 2.0)  # glare under min_probability
    states = {(s.roi, s.tag): s for s in engine.states()}
    assert [key for key in states] == [
        ("left", "stain"),
        ("left", "glare"),
        ("right", "stain"),
        ("right", "glare"),
    ]
    assert states["left", "stain"] == RuleState("left", "stain", True, 2, 3, 2), "k of n: active"
    assert states["left", "glare"].hits == 0 and not states["left", "glare"].active
    assert states["right", "stain"] == RuleState("right", "stain", False, 0, 3, 2)
    assert states["left", "stain"].to_dict() == {
        "roi": "left",
        "tag": "stain",
        "active": True,
        "hits": 2,
        "n": 3,
        "k": 2,
    }

    engine.evaluate("left", (), 3.0)
    assert engine.states()[0] == RuleState("left", "stain", True, 2, 3, 2), "one clean frame: still on"
    engine.evaluate("left", (), 4.0)  # clear_after=2 clean frames: the episode ends, the window resets
    assert engine.states()[0] == RuleState("left", "stain", False, 0, 3, 2)


def test_rule_states_survive_carry_over() -> None:
    engine = RuleEngine((RuleSettings(tag="*", k=1, n=3),), ("stain",))
    engine.evaluate("full", (Prediction("stain", 0.9),), 1.0)
    carried, ended = engine.carry_over((RuleSettings(tag="*", k=1, n=5),), ("stain",), ["full"])
    assert ended == []
    assert carried.states() == (RuleState("full", "stain", True, 1, 5, 1),)


# ---- FrameJpegs -----------------------------------------------------------------------------------


def inspection(sequence: int, camera: str = "cam", width: int = 640, height: int = 480) -> Inspection:
    image = np.full((height, width, 3), sequence % 256, np.uint8)
    return Inspection(camera, sequence, Frame(image, 1.7e9 + sequence, sequence), (), (), "model")


class Offload:
    """The inference pool's offload, counted and optionally held at a gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, fn: Callable[..., bytes], *args: Any) -> bytes:
        self.calls.append(args[0].shape)
        if self.gate is not None:
            await self.gate.wait()
        return await asyncio.to_thread(fn, *args)


def decoded_width(body: bytes) -> int:
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return int(image.shape[1])


async def test_concurrent_askers_of_one_frame_share_one_encode(frames_clock: Clock) -> None:
    offload = Offload()
    offload.gate = asyncio.Event()
    jpegs = FrameJpegs(offload, fps=2.0)
    first = inspection(1)
    askers = [asyncio.ensure_future(jpegs.get(first, 320)) for _ in range(5)]
    await asyncio.sleep(0.01)
    askers[0].cancel()  # one watcher leaves: the others' encode goes on
    await asyncio.sleep(0)
    offload.gate.set()
    results = await asyncio.gather(*askers[1:])
    assert len(offload.calls) == 1, "one encode for five askers"
    assert {r.sequence for r in results} == {1} and len({r.body for r in results}) == 1
    assert decoded_width(results[0].body) == 320
    assert await jpegs.get(first, 320) is results[0], "asked again: the same JPEG, no new encode"
    assert len(offload.calls) == 1
    # Another size is another encode, kept apart.
    big = await jpegs.get(first, 1280)
    assert big.sequence == 1 and decoded_width(big.body) == 640, "never enlarged"
    assert len(offload.calls) == 2


async def test_the_rate_cap_serves_the_previous_jpeg_inside_the_period(frames_clock: Clock) -> None:
    offload = Offload()
    jpegs = FrameJpegs(offload, fps=2.0)  # one new JPEG per camera and size every 0.5 s
    one = await jpegs.get(inspection(1), 320)
    frames_clock.now += 0.3
    again = await jpegs.get(inspection(2), 320)
    assert again is one and again.sequence == 1, "a newer frame inside the period: the previous JPEG"
    assert len(offload.calls) == 1
    other_camera = await jpegs.get(inspection(2, camera="other"), 320)
    assert other_camera.sequence == 2, "the cap is per camera"
    frames_clock.now += 0.2  # the period is over
    two = await jpegs.get(inspection(2), 320)
    assert two.sequence == 2 and two.body != one.body
    assert len(offload.calls) == 3
    frames_clock.now += 5
    assert await jpegs.get(inspection(2), 320) is two, "the same frame later: no new encode"
    assert len(offload.calls) == 3
    jpegs.forget("cam")
    assert (await jpegs.get(inspection(2), 320)).sequence == 2
    assert len(offload.calls) == 4


async def test_the_period_counts_from_the_encode_start(frames_clock: Clock) -> None:
    """A slow encode must not eat into the next frame's turn: a page asking at live_fps gets a new JPEG
    each time (stamped at the end, a 1080p page got every other one twice: ui_bench)."""
    inner = Offload()

    async def slow(fn: Callable[..., bytes], *args: Any) -> bytes:
        body = await inner(fn, *args)
        frames_clock.now += 0.4  # the encode (and its wait for a pool thread) took 0.4 s of the 0.5
        return body

    jpegs = FrameJpegs(slow, fps=2.0)
    assert (await jpegs.get(inspection(1), 320)).sequence == 1
    frames_clock.now += 0.15  # the next inspection, 0.55 s after the first request
    assert (await jpegs.get(inspection(2), 320)).sequence == 2
    assert len(inner.calls) == 2


def test_widths_snap_to_the_cached_sizes() -> None:
    assert [width_for(w) for w in (-5, 0, 1, 320, 321, 640, 641, 1280, 5000)] == [
        320,
        320,
        320,
        320,
        640,
        640,
        1280,
        1280,
        1280,
    ]


# ---- UiSettings -----------------------------------------------------------------------------------


def test_ui_settings_defaults() -> None:
    ui = UiSettings()
    assert ui.enabled and ui.open_on_loopback and ui.viewer_key is None
    assert ui.live_fps == 2.0 and ui.max_live_clients == 16 and ui.session_ttl_s == 12 * 3600.0


@pytest.mark.parametrize(
    ("ui", "field"),
    [
        ({"viewer_key": "short-key"}, "ui.viewer_key"),
        ({"viewer_key": "x" * 11}, "ui.viewer_key"),
        ({"live_fps": 0}, "ui.live_fps"),
        ({"live_fps": 11}, "ui.live_fps"),
        ({"max_live_clients": 0}, "ui.max_live_clients"),
        ({"session_ttl_s": 0}, "ui.session_ttl_s"),
        ({"colour": "blue"}, "ui.colour"),
    ],
)
def test_bad_ui_settings_are_refused_by_name(ui: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as caught:
        build_settings({"ui": ui})
    assert "short-key" not in str(caught.value), "a rejected key is not quoted back"


def test_a_twelve_character_viewer_key_is_enough() -> None:
    assert UiSettings(viewer_key=SecretStr("x" * 12)).viewer_key is not None
    with pytest.raises(ValidationError):
        UiSettings(viewer_key=SecretStr("x" * 11))

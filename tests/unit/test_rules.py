"""RuleEngine: k-of-n debouncing, the episode lifecycle (started / ended), cooldown, rule selection.

Pure tests: synthetic Prediction lists fed frame by frame with explicit capture times.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from edge_runtime.domain import BoundingBox, EventKind, Prediction
from edge_runtime.events.rules import Decision, RuleEngine, rule_for
from edge_runtime.settings import RuleSettings

LABELS = ("stain", "glare")
BOX = BoundingBox(0.1, 0.2, 0.2, 0.2)  # area 0.04
HIT = "hit"
MISS = "miss"


def rule(**fields: object) -> RuleSettings:
    """A rule with no cooldown unless the test sets one (the default 10 s would hide restarts)."""
    fields.setdefault("cooldown_s", 0.0)
    return RuleSettings(**fields)  # type: ignore[arg-type]


def pred(tag: str = "stain", p: float = 0.9, box: BoundingBox | None = BOX) -> Prediction:
    return Prediction(tag, p, LABELS.index(tag) if tag in LABELS else None, box)


def feed(
    engine: RuleEngine,
    frames: Sequence[str | Sequence[Prediction]],
    roi: str = "full",
    t0: float = 1000.0,
    dt: float = 0.5,
) -> list[tuple[int, Decision]]:
    """Feed frames (HIT = one stain prediction at p 0.9, MISS = nothing, or explicit predictions) and
    return (frame index, decision) for every decision."""
    out = []
    for i, frame in enumerate(frames):
        if frame == HIT:
            predictions: Sequence[Prediction] = [pred()]
        elif frame == MISS:
            predictions = []
        else:
            predictions = frame  # type: ignore[assignment]
        for decision in engine.evaluate(roi, predictions, t0 + i * dt):
            out.append((i, decision))
    return out


def kinds(decisions: list[tuple[int, Decision]]) -> list[tuple[int, str]]:
    return [(i, d.kind.value) for i, d in decisions]


# --------------------------------------------------------------------------------------------------
# k of n


@pytest.mark.parametrize(
    ("frames", "expected"),
    [
        ([HIT, MISS, HIT], [(2, "started")]),  # 2 hits among the last 3
        ([HIT, HIT], [(1, "started")]),
        ([HIT, MISS, MISS, HIT], []),  # the first hit has left the window of 3
        ([HIT, MISS, MISS, HIT, MISS], []),
        ([HIT, MISS, MISS, HIT, HIT], [(4, "started")]),
        ([MISS, MISS, HIT], []),
        ([HIT], []),
    ],
    ids=["hit-miss-hit", "hit-hit", "hit-miss-miss-hit", "sparse", "late-pair", "one-late", "single"],
)
def test_k_of_n_two_of_three(frames: list[str], expected: list[tuple[int, str]]) -> None:
    engine = RuleEngine([rule(k=2, n=3)], LABELS)
    assert kinds(feed(engine, frames)) == expected


def test_the_deciding_frame_must_itself_be_a_hit() -> None:
    # hit, hit would already have started; with k=3 of n=4: hit, hit, miss -> not yet (2 of 3 seen),
    # hit -> 3 of the last 4 -> started on that hit.
    engine = RuleEngine([rule(k=3, n=4)], LABELS)
    assert kinds(feed(engine, [HIT, HIT, MISS, HIT])) == [(3, "started")]
    engine = RuleEngine([rule(k=3, n=4)], LABELS)
    assert kinds(feed(engine, [HIT, MISS, HIT, MISS, MISS])) == []


def test_k_equals_one_starts_on_the_first_hit() -> None:
    engine = RuleEngine([rule(k=1, n=1)], LABELS)
    assert kinds(feed(engine, [MISS, HIT])) == [(1, "started")]


# --------------------------------------------------------------------------------------------------
# What counts as a hit


@pytest.mark.parametrize(
    ("p", "counts"), [(0.5, True), (0.50000001, True), (0.49999999, False), (0.0, False)]
)
def test_min_probability_is_inclusive(p: float, counts: bool) -> None:
    engine = RuleEngine([rule(k=1, n=1, min_probability=0.5)], LABELS)
    decisions = engine.evaluate("full", [pred(p=p)], 1.0)
    assert [d.kind for d in decisions] == ([EventKind.STARTED] if counts else [])


@pytest.mark.parametrize(
    ("box", "counts"),
    [
        (BoundingBox(0.0, 0.0, 0.1, 0.1), False),  # area 0.01 < 0.02
        (BoundingBox(0.0, 0.0, 0.1, 0.25), True),  # area 0.025
        (BoundingBox(0.5, 0.5, 0.5, 0.5), True),  # area 0.25
        (None, True),  # classification: no box, the area filter does not apply
    ],
    ids=["small-box", "large-enough", "large", "classification"],
)
def test_min_box_area_filters_small_boxes_only(box: BoundingBox | None, counts: bool) -> None:
    engine = RuleEngine([rule(k=1, n=1, min_box_area=0.02)], LABELS)
    decisions = engine.evaluate("full", [pred(box=box)], 1.0)
    assert [d.kind for d in decisions] == ([EventKind.STARTED] if counts else [])


def test_min_box_area_boundary_is_inclusive() -> None:
    box = BoundingBox(0.0, 0.0, 0.5, 0.25)  # exactly 0.125 (exact in binary floating point)
    engine = RuleEngine([rule(k=1, n=1, min_box_area=0.125)], LABELS)
    assert [d.kind for d in engine.evaluate("full", [pred(box=box)], 1.0)] == [EventKind.STARTED]


def test_started_carries_the_best_probability_and_only_the_qualifying_boxes() -> None:
    big_a = BoundingBox(0.1, 0.1, 0.3, 0.3)
    big_b = BoundingBox(0.6, 0.6, 0.3, 0.3)
    tiny = BoundingBox(0.0, 0.0, 0.01, 0.01)
    engine = RuleEngine([rule(k=1, n=1, min_probability=0.5, min_box_area=0.01)], LABELS)
    frame = [
        pred(p=0.7, box=big_a),
        pred(p=0.95, box=tiny),  # too small: not a hit, even if the most probable
        pred(p=0.8, box=big_b),
        pred(p=0.3, box=big_b),  # below min_probability
        pred("glare", p=0.2, box=big_a),
    ]
    [decision] = engine.evaluate("station-a", frame, 5.0)
    assert decision == Decision(EventKind.STARTED, "station-a", "stain", 0.8, (big_a, big_b))


def test_predictions_of_unknown_tags_are_ignored() -> None:
    engine = RuleEngine([rule(k=1, n=1)], LABELS)
    assert engine.evaluate("full", [pred("scratch")], 1.0) == []


# --------------------------------------------------------------------------------------------------
# Episode lifecycle


def test_one_started_per_episode_while_the_defect_stays() -> None:
    engine = RuleEngine([rule(k=2, n=3, clear_after=3)], LABELS)
    assert kinds(feed(engine, [HIT] * 20)) == [(1, "started")]


def test_ended_after_clear_after_clean_frames_with_the_episode_maximum() -> None:
    a, b, c = (
        BoundingBox(0.1, 0.1, 0.2, 0.2),
        BoundingBox(0.3, 0.3, 0.2, 0.2),
        BoundingBox(0.5, 0.5, 0.2, 0.2),
    )
    engine = RuleEngine([rule(k=2, n=3, clear_after=3)], LABELS)
    frames: list[str | list[Prediction]] = [
        [pred(p=0.6, box=a)],
        [pred(p=0.7, box=a)],  # started (p 0.7)
        [pred(p=0.95, box=b)],  # the episode's maximum
        [pred(p=0.8, box=c)],
        MISS,
        MISS,
        MISS,  # third clean frame in a row -> ended
        MISS,
    ]
    decisions = feed(engine, frames)
    assert kinds(decisions) == [(1, "started"), (6, "ended")]
    started, ended = decisions[0][1], decisions[1][1]
    assert started.probability == 0.7 and started.boxes == (a,)
    assert ended == Decision(EventKind.ENDED, "full", "stain", 0.95, (b,))


def test_a_hit_resets_the_clean_count() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=3)], LABELS)
    frames = [HIT, MISS, MISS, HIT, MISS, MISS, MISS]
    assert kinds(feed(engine, frames)) == [(0, "started"), (6, "ended")]


def test_a_low_probability_frame_counts_as_clean() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=2, min_probability=0.5)], LABELS)
    frames = [HIT, [pred(p=0.2)], [pred(p=0.49)]]
    assert kinds(feed(engine, frames)) == [(0, "started"), (2, "ended")]


def test_a_new_episode_needs_k_fresh_hits_after_ending() -> None:
    engine = RuleEngine([rule(k=2, n=3, clear_after=1)], LABELS)
    frames = [HIT, HIT, MISS, HIT, MISS, HIT, HIT]
    assert kinds(feed(engine, frames)) == [(1, "started"), (2, "ended"), (5, "started")]


def test_emit_ended_false_never_ends_but_episodes_still_close() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=2, emit_ended=False)], LABELS)
    frames = [HIT, HIT, MISS, MISS, MISS, HIT, MISS, MISS]
    # The first episode closes silently after two clean frames, so the hit at 5 is a new episode.
    assert kinds(feed(engine, frames)) == [(0, "started"), (5, "started")]


# --------------------------------------------------------------------------------------------------
# Cooldown


def at(engine: RuleEngine, t: float, hit: bool, roi: str = "full") -> list[str]:
    return [f"{d.tag}:{d.kind.value}" for d in engine.evaluate(roi, [pred()] if hit else [], t)]


def test_restart_within_cooldown_is_silent_start_and_end() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=1, cooldown_s=10.0)], LABELS)
    assert at(engine, 100.0, True) == ["stain:started"]
    assert at(engine, 101.0, False) == ["stain:ended"]
    assert at(engine, 102.0, True) == []  # a new episode 2 s after the last start: silent
    assert at(engine, 103.0, True) == []
    assert at(engine, 104.0, False) == []  # ... and its end is silent too
    assert at(engine, 111.0, True) == ["stain:started"]  # 11 s after the last start
    assert at(engine, 112.0, False) == ["stain:ended"]


def test_cooldown_is_measured_from_the_last_emitted_start() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=1, cooldown_s=10.0)], LABELS)
    assert at(engine, 0.0, True) == ["stain:started"]
    assert at(engine, 1.0, False) == ["stain:ended"]
    assert at(engine, 9.0, True) == []  # silent: 9 s after the start at 0
    assert at(engine, 9.5, False) == []
    assert at(engine, 10.0, True) == ["stain:started"]  # exactly cooldown_s later: no longer inside


def test_no_cooldown_every_episode_is_reported() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=1, cooldown_s=0.0)], LABELS)
    out = [at(engine, float(t), t % 2 == 0) for t in range(6)]
    assert out == [["stain:started"], ["stain:ended"]] * 3


# --------------------------------------------------------------------------------------------------
# Independence and rule selection


def test_rois_are_independent() -> None:
    engine = RuleEngine([rule(k=2, n=3, clear_after=1, cooldown_s=60.0)], LABELS)
    assert at(engine, 0.0, True, "a") == []
    assert at(engine, 0.0, True, "b") == []
    assert at(engine, 1.0, True, "a") == ["stain:started"]
    assert at(engine, 1.0, False, "b") == []  # b: 1 hit of 2 so far
    assert at(engine, 2.0, True, "b") == ["stain:started"]  # a's cooldown does not silence b
    assert at(engine, 3.0, False, "a") == ["stain:ended"]
    assert at(engine, 3.0, True, "b") == []  # b's episode still going


def test_tags_are_independent() -> None:
    engine = RuleEngine([rule(k=1, n=1, clear_after=1, cooldown_s=60.0)], LABELS)
    both = [pred("stain"), pred("glare")]
    assert sorted(f"{d.tag}:{d.kind.value}" for d in engine.evaluate("full", both, 0.0)) == [
        "glare:started",
        "stain:started",
    ]
    assert [f"{d.tag}:{d.kind.value}" for d in engine.evaluate("full", [pred("stain")], 1.0)] == [
        "glare:ended"
    ]
    assert [f"{d.tag}:{d.kind.value}" for d in engine.evaluate("full", [], 2.0)] == ["stain:ended"]


@pytest.mark.parametrize("specific_first", [True, False])
def test_a_tag_specific_rule_wins_over_the_wildcard(specific_first: bool) -> None:
    wildcard = rule(tag="*", min_probability=0.9, k=1, n=1)
    specific = rule(tag="stain", min_probability=0.3, k=1, n=1)
    rules = [specific, wildcard] if specific_first else [wildcard, specific]
    assert rule_for("stain", rules) is specific
    assert rule_for("glare", rules) is wildcard
    engine = RuleEngine(rules, LABELS)
    decisions = engine.evaluate("full", [pred("stain", 0.5), pred("glare", 0.5)], 0.0)
    assert [(d.tag, d.kind) for d in decisions] == [("stain", EventKind.STARTED)]
    decisions = engine.evaluate("full", [pred("glare", 0.95)], 1.0)
    assert [(d.tag, d.kind) for d in decisions] == [("glare", EventKind.STARTED)]


def test_each_tag_uses_its_own_rule_parameters() -> None:
    rules = [rule(tag="stain", k=1, n=1), rule(tag="*", k=3, n=3)]
    engine = RuleEngine(rules, LABELS)
    both = [pred("stain"), pred("glare")]
    out = [[d.tag for d in engine.evaluate("full", both, float(t))] for t in range(3)]
    assert out == [["stain"], [], ["glare"]]


def test_a_tag_without_a_rule_never_fires() -> None:
    rules = [rule(tag="stain", k=1, n=1)]
    assert rule_for("glare", rules) is None
    engine = RuleEngine(rules, LABELS)
    for t in range(10):
        decisions = engine.evaluate("full", [pred("glare", 1.0)], float(t))
        assert decisions == []


def test_no_rules_at_all_never_fires() -> None:
    engine = RuleEngine([], LABELS)
    assert rule_for("stain", []) is None
    assert feed(engine, [HIT] * 5) == []


# --------------------------------------------------------------------------------------------------
# carrying episodes over to new rules (a twin patch, a model swap)


def test_a_threshold_change_during_an_episode_does_not_alert_again() -> None:
    engine = RuleEngine([rule(k=2, n=3, clear_after=2)], LABELS)
    assert kinds(feed(engine, [HIT, HIT, HIT])) == [(1, "started")]
    engine, ended = engine.carry_over([rule(k=2, n=3, clear_after=2, min_probability=0.8)], LABELS, ["full"])
    assert ended == []
    # the defect is still there: no second "started"; when it clears, the one episode ends
    later = feed(engine, [HIT, HIT, MISS, MISS], t0=1002.0)
    assert kinds(later) == [(3, "ended")]


def test_without_carry_over_the_same_frames_would_alert_twice() -> None:
    """The control for the test above: a fresh engine starts a second episode."""
    engine = RuleEngine([rule(k=2, n=3, clear_after=2)], LABELS)
    feed(engine, [HIT, HIT, HIT])
    fresh = RuleEngine([rule(k=2, n=3, clear_after=2, min_probability=0.8)], LABELS)
    assert kinds(feed(fresh, [HIT, HIT, MISS, MISS], t0=1002.0)) == [(1, "started"), (3, "ended")]


def test_episodes_whose_tag_or_roi_is_gone_end() -> None:
    engine = RuleEngine([rule(k=1, n=1)], LABELS)
    feed(engine, [HIT], roi="left")
    feed(engine, [HIT], roi="right")
    feed(engine, [[pred("glare")]], roi="right")
    # only glare keeps a rule, and the "left" ROI is gone
    engine, ended = engine.carry_over([rule(tag="glare", k=1, n=1)], LABELS, ["right"])
    assert sorted((d.kind.value, d.roi, d.tag) for d in ended) == [
        ("ended", "left", "stain"),
        ("ended", "right", "stain"),
    ]
    # glare on "right" carried on: still active, so a hit raises nothing new and clearing ends it
    assert kinds(feed(engine, [[pred("glare")], MISS, MISS, MISS], roi="right", t0=1010.0)) == [(3, "ended")]


def test_carry_over_resizes_the_window_to_the_new_n() -> None:
    engine = RuleEngine([rule(k=3, n=5)], LABELS)
    feed(engine, [HIT, MISS, HIT, MISS])  # 2 hits of 5: not yet
    engine, _ = engine.carry_over([rule(k=2, n=2)], LABELS, ["full"])
    # the window keeps its newest 2 entries (HIT, MISS); a hit makes (MISS, HIT): 1 of 2, a second 2 of 2
    assert kinds(feed(engine, [HIT], t0=1003.0)) == []
    assert kinds(feed(engine, [HIT], t0=1004.0)) == [(0, "started")]


def test_silent_or_quiet_episodes_end_silently() -> None:
    engine = RuleEngine([rule(k=1, n=1, emit_ended=False)], LABELS)
    feed(engine, [HIT])
    _, ended = engine.carry_over([], LABELS, ["full"])
    assert ended == []

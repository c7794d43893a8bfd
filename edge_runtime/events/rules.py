"""Pure rules: per camera / ROI / tag, k-of-n debouncing and an episode lifecycle with cooldown.

An episode starts when a tag is seen (probability >= min_probability, and for detection a box of at
least min_box_area) in k of the last n sampled frames: one `started` decision. It ends after
`clear_after` clean frames in a row: one `ended` decision (if emit_ended). A new episode that starts
within `cooldown_s` of the last `started` one is tracked silently (no start, no end), so a flickering
defect does not flood the line with alerts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from edge_runtime.domain import BoundingBox, EventKind, Prediction
from edge_runtime.settings import RuleSettings


@dataclass(frozen=True, slots=True)
class Decision:
    kind: EventKind
    roi: str
    tag: str
    probability: float
    boxes: tuple[BoundingBox, ...]


@dataclass(frozen=True, slots=True)
class RuleState:
    """Where one ROI/tag's rule stands, for people watching: `hits` of the last `window` frames."""

    roi: str
    tag: str
    active: bool
    hits: int
    window: int
    k: int

    def to_dict(self) -> dict[str, object]:
        return {
            "roi": self.roi,
            "tag": self.tag,
            "active": self.active,
            "hits": self.hits,
            "n": self.window,
            "k": self.k,
        }


@dataclass(slots=True)
class _Episode:
    rule: RuleSettings
    window: deque[bool] = field(default_factory=deque)
    active: bool = False
    silent: bool = False  # started inside the cooldown: no events for this episode
    clean: int = 0
    max_probability: float = 0.0
    boxes: tuple[BoundingBox, ...] = ()
    last_started_at: float | None = None


def rule_for(tag: str, rules: Sequence[RuleSettings]) -> RuleSettings | None:
    for rule in rules:
        if rule.tag == tag:
            return rule
    for rule in rules:
        if rule.tag == "*":
            return rule
    return None


def _hits(tag: str, predictions: Sequence[Prediction], rule: RuleSettings) -> list[Prediction]:
    return [
        p
        for p in predictions
        if p.tag_name == tag
        and p.probability >= rule.min_probability
        and (p.bounding_box is None or p.bounding_box.area >= rule.min_box_area)
    ]


class RuleEngine:
    """One per camera. Feed it every sampled frame's predictions per ROI, in capture order."""

    def __init__(self, rules: Sequence[RuleSettings], labels: Sequence[str]) -> None:
        self._rules = tuple(rules)
        self._labels = tuple(labels)
        self._episodes: dict[tuple[str, str], _Episode] = {}

    def evaluate(self, roi: str, predictions: Sequence[Prediction], captured_at: float) -> list[Decision]:
        """`predictions` must already be in full-frame coordinates."""
        decisions = []
        for tag in self._labels:
            rule = rule_for(tag, self._rules)
            if rule is None:
                continue
            episode = self._episodes.get((roi, tag))
            if episode is None:
                episode = self._episodes[(roi, tag)] = _Episode(rule, deque(maxlen=rule.n))
            decision = self._step(episode, roi, tag, _hits(tag, predictions, rule), captured_at)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def states(self) -> tuple[RuleState, ...]:
        """Each ROI/tag seen so far, in first-seen order."""
        return tuple(
            RuleState(roi, tag, e.active, sum(e.window), e.rule.n, e.rule.k)
            for (roi, tag), e in self._episodes.items()
        )

    def carry_over(
        self, rules: Sequence[RuleSettings], labels: Sequence[str], rois: Sequence[str]
    ) -> tuple[RuleEngine, list[Decision]]:
        """A new engine for new rules / labels / ROIs that keeps running episodes going (a threshold
        change must not re-alert a defect already reported); episodes whose tag or ROI is gone end."""
        engine = RuleEngine(rules, labels)
        ended = []
        for (roi, tag), episode in self._episodes.items():
            rule = rule_for(tag, engine._rules) if tag in engine._labels and roi in rois else None
            if rule is not None:
                window = deque(episode.window, maxlen=rule.n)
                engine._episodes[(roi, tag)] = replace(episode, rule=rule, window=window)
            elif episode.active and not episode.silent and episode.rule.emit_ended:
                ended.append(Decision(EventKind.ENDED, roi, tag, episode.max_probability, episode.boxes))
        return engine, ended

    @staticmethod
    def _step(
        episode: _Episode, roi: str, tag: str, hits: list[Prediction], captured_at: float
    ) -> Decision | None:
        rule = episode.rule
        episode.window.append(bool(hits))
        if hits:
            best = max(hits, key=lambda p: p.probability)
            boxes = tuple(p.bounding_box for p in hits if p.bounding_box is not None)
        if not episode.active:
            if sum(episode.window) < rule.k or not hits:
                return None
            episode.active, episode.clean = True, 0
            episode.max_probability, episode.boxes = best.probability, boxes
            last = episode.last_started_at
            episode.silent = last is not None and captured_at - last < rule.cooldown_s
            if episode.silent:
                return None
            episode.last_started_at = captured_at
            return Decision(EventKind.STARTED, roi, tag, best.probability, boxes)
        if hits:
            episode.clean = 0
            if best.probability >= episode.max_probability:
                episode.max_probability, episode.boxes = best.probability, boxes
            return None
        episode.clean += 1
        if episode.clean < rule.clear_after:
            return None
        episode.active = False
        episode.window.clear()
        if episode.silent or not rule.emit_ended:
            return None
        return Decision(EventKind.ENDED, roi, tag, episode.max_probability, episode.boxes)

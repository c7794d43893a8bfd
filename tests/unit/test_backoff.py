import pytest

from edge_runtime.backoff import Backoff


def test_doubles_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.5, 3.0, jitter=0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_jitter_scales_each_delay_within_its_bounds() -> None:
    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    backoff = Backoff(1.0, 10.0, jitter=0.2, uniform=uniform)
    assert backoff.next_delay() == pytest.approx(1.2)
    assert backoff.next_delay() == pytest.approx(2.4)
    assert seen == [(0.8, 1.2), (0.8, 1.2)]


def test_an_initial_delay_above_the_maximum_is_capped() -> None:
    assert Backoff(5.0, 2.0, jitter=0).next_delay() == 2.0


@pytest.mark.parametrize("args", [(0, 1), (1, 0), (1, 1, 1.0), (1, 1, -0.1)])
def test_nonsense_is_refused(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)

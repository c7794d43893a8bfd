"""Waiting for a condition in tests, by polling, with a deadline that fails the test and says what.

    await eventually(condition, timeout, what)   async tests: the loop (and the parts on it) keeps running
    wait_until(condition, timeout, what)         threads and processes, from sync tests

Both return the seconds it took, and raise AssertionError("not within <timeout> s: <what>") past the
deadline. `condition` may return any value; it is tested for truth.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(
    condition: Callable[[], object], timeout: float = 5.0, what: str = "the condition", every: float = 0.005
) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(every)
    return time.monotonic() - start


def wait_until(
    condition: Callable[[], object], timeout: float = 5.0, what: str = "the condition", every: float = 0.05
) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(every)
    return time.monotonic() - start

"""The contract every long-lived part keeps (Delivery, Cameras, ModelService, InferenceService).

    check(config)   construct, don't start: raise ConfigError for a configuration it cannot run
    apply(config)   a live change to its slice of the settings; returns what changed (for the status);
                    rolls itself back (or leaves nothing half-done) when it raises
    async with      entered by app.py in dependency order; exit is bounded and never raises

The Controller validates a whole desired document with every part's check() first, then applies each
changed slice in a fixed order (control.py SLICES). A part receives its collaborators once, when it is
constructed; nothing calls back into the composition root.
"""

from __future__ import annotations

from typing import Protocol, Self, TypeVar

C = TypeVar("C", contravariant=True)


class Part(Protocol[C]):
    def check(self, config: C) -> None: ...

    async def apply(self, config: C) -> list[str]: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

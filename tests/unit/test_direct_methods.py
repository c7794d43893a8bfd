"""Direct methods (edge_runtime/iotedge/methods.py): getStatus, reloadModel, captureSnapshot, unknown names.

Unit level, on tests/control_harness.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import control_harness
import numpy as np
from control_harness import FakeLoader, Harness, base_data

from edge_runtime.domain import Frame
from edge_runtime.iotedge.methods import DirectMethods

# The shared fixtures (tests/control_harness.py); the autouse one puts the root log level back.
_restore_root_log_level = control_harness._restore_root_log_level
loader = control_harness.loader
starter = control_harness.starter
make = control_harness.make


# ---------------------------------------------------------------------------------------------------
# direct methods


async def test_methods_get_status_and_unknown(make: Any) -> None:
    h = await make()
    methods = DirectMethods(h.controller, h.cameras, h.delivery)
    status, payload = await methods.call("getStatus", None)
    assert status == 200 and payload == h.controller.status()
    status, payload = await methods.call("rebootDevice", {})
    assert status == 404
    assert payload == {
        "error": "unknown method 'rebootDevice'",
        "methods": ["captureSnapshot", "getStatus", "inspect", "reloadModel"],
    }


async def test_methods_reload_model(make: Any, loader: FakeLoader, tmp_path: Path) -> None:
    h = await make(base_data(tmp_path, model={"path": "/models/m"}))
    methods = DirectMethods(h.controller, h.cameras, h.delivery)
    status, payload = await methods.call("reloadModel", None)
    assert status == 200 and payload["model"]["status"] == "ready" and payload["model"]["id"] == "m"
    loader.results["m"] = ValueError("bad file")
    status, payload = await methods.call("reloadModel", None)
    assert status == 500 and payload["error"] == "ValueError: bad file"
    assert payload["model"]["status"] == "failed" and payload["model"]["id"] == "m"
    assert h.slot.predictor.name == "m"


def fake_sampler(frame: Frame | None, state: str = "streaming") -> Any:
    status = SimpleNamespace(state=SimpleNamespace(value=state))
    return SimpleNamespace(
        capture=SimpleNamespace(slot=SimpleNamespace(peek=lambda: frame), status=lambda: status), view=None
    )


async def test_methods_capture_snapshot_statuses(make: Any, tmp_path: Path) -> None:
    h = await make()
    methods = DirectMethods(h.controller, h.cameras, h.delivery)
    for bad in (None, [], {"camera": 3}, {}):
        status, payload = await methods.call("captureSnapshot", bad)
        assert (status, payload) == (400, {"error": 'payload must be {"camera": "<camera id>"}'})
    frame = Frame(np.full((24, 32, 3), 120, np.uint8), captured_at=1_700_000_000.25, sequence=1)
    h.cameras.samplers["cam"] = fake_sampler(frame)
    h.cameras.samplers["dark"] = fake_sampler(None, "connecting")
    try:
        await _snapshot_statuses(methods, h, tmp_path)
    finally:
        h.cameras.samplers.clear()  # fakes: nothing to stop


async def _snapshot_statuses(methods: DirectMethods, h: Harness, tmp_path: Path) -> None:
    status, payload = await methods.call("captureSnapshot", {"camera": "nope"})
    assert (status, payload) == (404, {"error": "unknown camera 'nope'", "cameras": ["cam", "dark"]})
    status, payload = await methods.call("captureSnapshot", {"camera": "cam"})
    assert status == 409 and "snapshots are off" in payload["error"]

    assert (await h.controller.patch({"events": {"snapshot_dir": str(tmp_path / "snaps")}})).applied
    status, payload = await methods.call("captureSnapshot", {"camera": "dark"})
    assert (status, payload) == (409, {"error": "camera 'dark' has no frame yet", "state": "connecting"})
    status, payload = await methods.call("captureSnapshot", {"camera": "cam"})
    assert status == 200
    assert payload["path"] == f"/snapshots/{payload['id']}.jpg"
    assert payload["captured_at"] == "2023-11-14T22:13:20.250+00:00"
    assert h.delivery.snapshots is not None
    stored = h.delivery.snapshots.read(payload["id"])
    assert stored is not None and stored[:2] == b"\xff\xd8"

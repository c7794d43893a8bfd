"""Support for the station (triggered inspection) integration tests: settings, a model loader that
records which camera frames were predicted, the verdicts the JSONL sink wrote, and the `serve` process
configured by a YAML file.

    recorder = StampRecorder()                     # loader=recorder.load: the real Predictor, wrapped
    settings = station_settings(tmp_path, cameras=[...], stations=[...])
    verdicts_in(path)                               # what the JSONL sink wrote (kind == "verdict")

`StampRecorder` wraps `Predictor.predict_frame` (what a station's frames go through): for every frame
predicted it keeps the RTSP test camera's stamp read from the pixels (tests/rtsp_server.py), the
model's id, and when. Give the station's camera `sample: false`, so a station is the only caller.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from rtsp_fixtures import decode_stamp

from edge_runtime.domain import PredictionResult
from edge_runtime.engine import Predictor, PredictorOptions
from edge_runtime.settings import Settings, build_settings

REPO = Path(__file__).resolve().parents[1]
TRIGGER_KEY = "station-trigger-key-0123456789"
ADMIN_KEY = "station-admin-key-0123456789abcdef"

# The demo detector's labels; a defect rule on each.
DEFECTS = [{"tag": "stain", "min_probability": 0.5}, {"tag": "glare", "min_probability": 0.5}]


@dataclass(frozen=True, slots=True)
class Predicted:
    stamp: int | None  # the RTSP test camera's stamp (ms mod 2**32); None: not a stamped frame
    model: str  # the predictor's model id
    tag: str  # which StampRecorder loader made the predictor
    at: float  # our wall time when the prediction began


class StampRecorder:
    """A loader (create_app(..., loader=recorder.load)) whose predictors record every frame predicted.

    `delay_s`: extra seconds per predicted frame (a slow model, to hold an inspection open)."""

    def __init__(self, tag: str = "a", delay_s: float = 0.0) -> None:
        self.tag = tag
        self.delay_s = delay_s
        self._lock = threading.Lock()
        self.predicted: list[Predicted] = []

    def load(self, path: Path, options: PredictorOptions) -> Predictor:
        predictor = Predictor.load(path, options)
        inner = predictor.predict_frame
        model = predictor.spec.model_id

        def recording_predict_frame(frame: NDArray[np.uint8]) -> PredictionResult:
            began = time.time()
            stamp = decode_stamp(frame) if frame.shape[:2] == (240, 320) else None
            with self._lock:
                self.predicted.append(Predicted(stamp, model, self.tag, began))
            if self.delay_s:
                time.sleep(self.delay_s)
            return inner(frame)

        predictor.predict_frame = recording_predict_frame  # type: ignore[method-assign]
        return predictor

    def since(self, at: float) -> list[Predicted]:
        with self._lock:
            return [p for p in self.predicted if p.at >= at]

    def all(self) -> list[Predicted]:
        with self._lock:
            return list(self.predicted)


def events_paths(tmp_path: Path) -> dict[str, Any]:
    return {
        "jsonl_path": tmp_path / "events.jsonl",
        "snapshot_dir": tmp_path / "snapshots",
        "outbox_path": tmp_path / "outbox.sqlite3",
        "history_path": tmp_path / "history.sqlite3",
    }


def station(station_id: str, cameras: Sequence[str], **fields: Any) -> dict[str, Any]:
    return {"id": station_id, "cameras": list(cameras), "defects": DEFECTS, **fields}


def camera(camera_id: str, url: str, **fields: Any) -> dict[str, Any]:
    """A station's camera: every frame decoded, no sampling of its own (a station is its only user)."""
    return {
        "id": camera_id,
        "url": url,
        "decode": "all",
        "sample": False,
        "fps": 2,
        "open_timeout_s": 3,
        "stall_timeout_s": 3,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1,
        **fields,
    }


def station_tree(
    tmp_path: Path,
    cameras: Sequence[Mapping[str, Any]],
    stations: Sequence[Mapping[str, Any]],
    **sections: Any,
) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "server": {"inference_workers": 2, "admin_key": ADMIN_KEY},
        "model": {"device": "cpu"},
        "cameras": list(cameras),
        "stations": list(stations),
        "events": events_paths(tmp_path),
    }
    for name, value in sections.items():
        tree[name] = {**tree.get(name, {}), **value}
    return tree


def station_settings(
    tmp_path: Path,
    cameras: Sequence[Mapping[str, Any]],
    stations: Sequence[Mapping[str, Any]],
    **sections: Any,
) -> Settings:
    return build_settings(station_tree(tmp_path, cameras, stations, **sections))


def records_in(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def verdicts_in(path: Path, station_id: str | None = None) -> list[dict[str, Any]]:
    """The verdicts the JSONL sink wrote (of one station, if given), in order."""
    return [
        r
        for r in records_in(path)
        if r.get("kind") == "verdict" and (station_id is None or r.get("station") == station_id)
    ]


def epoch(iso_time: str) -> float:
    return datetime.fromisoformat(iso_time).timestamp()


# --------------------------------------------------------------------------------------------------
# `python -m edge_runtime serve --config <yaml>`


class StationServe:
    """The runtime as a process, configured by a YAML file (paths under `directory`)."""

    def __init__(self, directory: Path, tree: Mapping[str, Any], model: Path, name: str = "serve") -> None:
        from processes import free_port

        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.jsonl = directory / "events.jsonl"
        self.log_path = directory / f"{name}.log"
        config = directory / f"{name}.yaml"
        config.write_text(yaml.safe_dump(_plain(tree)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
        env["TMPDIR"] = str(directory)
        args = ["--config", str(config), "--model", str(model)]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "serve", *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> StationServe:
        from processes import wait_ready

        wait_ready(self.base, self.proc, self.log_path, timeout)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _plain(tree: Any) -> Any:
    """Paths as strings, for yaml.safe_dump."""
    if isinstance(tree, Mapping):
        return {str(k): _plain(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [_plain(v) for v in tree]
    if isinstance(tree, Path):
        return str(tree)
    return tree

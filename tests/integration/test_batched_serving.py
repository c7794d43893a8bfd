"""Micro-batching over HTTP: with server.batch_window_ms set, concurrent POST /image requests for the
meter model run in batches (the batch-size histogram says so) and each still gets the container's
answer for its own image; a ROI camera path gets the same predictions as unbatched."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp

from edge_runtime.settings import build_settings


def settings(tmp_path: Path, window_ms: float) -> Any:
    return build_settings(
        {
            "server": {"inference_workers": 2, "batch_window_ms": window_ms, "max_batch": 8},
            "model": {"device": "cpu"},
            "events": {
                "jsonl_path": tmp_path / "events.jsonl",
                "snapshot_dir": None,
                "outbox_path": tmp_path / "outbox.sqlite3",
                "history_path": None,
            },
        }
    )


def batch_histogram(metrics_text: str) -> tuple[float, float]:
    count = re.search(r"^edge_runtime_inference_batch_size_count (\S+)$", metrics_text, re.M)
    total = re.search(r"^edge_runtime_inference_batch_size_sum (\S+)$", metrics_text, re.M)
    assert count and total, "no batch-size histogram"
    return float(count.group(1)), float(total.group(1))


async def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    tmp_path: Path,
    start_server: Any,
    meter_dir: Path,
    meter_expected: dict[str, list[float]],
    meter_labels: list[str],
) -> None:
    server = start_server(meter_dir, settings(tmp_path, 20.0))
    images = {name: (meter_dir / name).read_bytes() for name in meter_expected}
    async with aiohttp.ClientSession() as session:
        before = batch_histogram(await (await session.get(f"{server.url}/metrics")).text())

        async def post(name: str) -> tuple[str, dict[str, Any]]:
            async with session.post(f"{server.url}/image", data=images[name]) as response:
                assert response.status == 200, await response.text()
                return name, json.loads(await response.text())

        answers = await asyncio.gather(*(post(name) for name in list(images) * 4))
        after = batch_histogram(await (await session.get(f"{server.url}/metrics")).text())
    for name, body in answers:
        got = {p["tagName"]: p["probability"] for p in body["predictions"]}
        for label, expected in zip(meter_labels, meter_expected[name], strict=True):
            assert abs(got[label] - expected) <= 1e-4, (name, label)
    batches, inputs = after[0] - before[0], after[1] - before[1]
    assert inputs == len(answers)
    assert batches < inputs  # some requests shared a batch

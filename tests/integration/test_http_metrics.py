"""GET /metrics: Prometheus text parsed with prometheus_client; checked as before/after deltas because the
metrics live in the process-global default registry (every server in this process shares them)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from model_loaders import slow_loader
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
STAGES = ("decode", "preprocess", "inference", "postprocess", "total")


async def scrape(client: aiohttp.ClientSession, base: str) -> tuple[Samples, set[str]]:
    """Every sample as {(name, labels): value}, plus the metric family names and types seen."""
    async with client.get(base + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(f"{family.name}:{family.type}")
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def post(client: aiohttp.ClientSession, url: str, data: bytes, **kwargs) -> int:
    async with client.post(url, data=data, **kwargs) as response:
        await response.read()
        return response.status


async def test_requests_are_counted_by_route_method_and_status(client, http, demo_server):
    base = demo_server.url
    before, _ = await scrape(client, base)
    assert await post(client, base + "/image", http.belt()) == 200
    assert await post(client, base + "/image", http.belt()) == 200
    assert await post(client, base + "/image", b"garbage") == 400
    assert await post(client, base + "/p/detect/iterations/it/image", http.belt()) == 200
    assert await post(client, base + "/nowhere", b"x") == 404
    async with client.get(base + "/image") as response:
        assert response.status == 405
    after, _ = await scrape(client, base)

    name = "edge_runtime_http_requests_total"
    assert delta(before, after, name, route="/image", method="POST", status="200") == 2
    assert delta(before, after, name, route="/image", method="POST", status="400") == 1
    detect = "/{project}/detect/iterations/{name}/image"
    assert delta(before, after, name, route=detect, method="POST", status="200") == 1
    assert delta(before, after, name, route="/metrics", method="GET", status="200") == 1
    assert delta(before, after, name, route="unmatched", method="POST", status="404") == 1
    assert delta(before, after, name, route="unmatched", method="GET", status="405") == 1


async def test_rejections_are_counted(client, http, start_server, demo_dir):
    settings = http.settings(server={"prediction_key": "k", "max_body_bytes": 1024})
    server = start_server(demo_dir, settings)
    before, _ = await scrape(client, server.url)
    assert await post(client, server.url + "/image", http.belt()) == 401
    assert await post(client, server.url + "/image", b"\0" * 2048, headers={"Prediction-Key": "k"}) == 413
    after, _ = await scrape(client, server.url)
    name = "edge_runtime_http_requests_total"
    assert delta(before, after, name, route="/image", method="POST", status="401") == 1
    assert delta(before, after, name, route="/image", method="POST", status="413") == 1


async def test_stage_histograms_observe_every_prediction(client, http, demo_server):
    base = demo_server.url
    before, families = await scrape(client, base)
    assert "edge_runtime_stage_seconds:histogram" in families
    for _ in range(3):
        assert await post(client, base + "/image", http.belt()) == 200
    assert await post(client, base + "/image", b"garbage") == 400  # failed: not a prediction
    after, _ = await scrape(client, base)

    for stage in STAGES:
        count = delta(before, after, "edge_runtime_stage_seconds_count", source="http", stage=stage)
        assert count == 3, stage
        total = delta(before, after, "edge_runtime_stage_seconds_sum", source="http", stage=stage)
        assert total >= 0.0, stage
        bucket = delta(
            before, after, "edge_runtime_stage_seconds_bucket", source="http", stage=stage, le="+Inf"
        )
        assert bucket == 3, stage
    for stage in ("decode", "inference", "total"):
        assert delta(before, after, "edge_runtime_stage_seconds_sum", source="http", stage=stage) > 0, stage
    total_sum = delta(before, after, "edge_runtime_stage_seconds_sum", source="http", stage="total")
    parts = sum(
        delta(before, after, "edge_runtime_stage_seconds_sum", source="http", stage=stage)
        for stage in STAGES[:-1]
    )
    assert total_sum == pytest.approx(parts, rel=1e-6, abs=1e-9)
    assert delta(before, after, "edge_runtime_predictions_total", source="http") == 3
    request_count = delta(before, after, "edge_runtime_http_request_seconds_count", route="/image")
    assert request_count == 3


async def test_inflight_gauge_follows_admitted_requests(client, http, start_server, demo_dir):
    server = start_server(demo_dir, loader=slow_loader(0.5))
    before, families = await scrape(client, server.url)
    assert "edge_runtime_http_inflight_requests:gauge" in families
    assert ("edge_runtime_http_inflight_requests", frozenset()) in before
    idle = value(before, "edge_runtime_http_inflight_requests")

    requests = [asyncio.create_task(post(client, server.url + "/image", http.belt())) for _ in range(2)]
    await asyncio.sleep(0.25)
    during, _ = await scrape(client, server.url)
    assert value(during, "edge_runtime_http_inflight_requests") == idle + 2
    assert await asyncio.gather(*requests) == [200, 200]
    after, _ = await scrape(client, server.url)
    assert value(after, "edge_runtime_http_inflight_requests") == idle


async def test_model_info_names_the_served_model_and_device(client, start_server, demo_dir):
    server = start_server(demo_dir)  # the latest model loaded in this process owns model_info
    samples, families = await scrape(client, server.url)
    assert "edge_runtime_model_info:gauge" in families
    info = [
        dict(labels) | {"value": v}
        for (name, labels), v in samples.items()
        if name == "edge_runtime_model_info" and v == 1
    ]
    assert len(info) == 1, info
    assert info[0]["device"] == "cpu"
    assert info[0]["model_id"] == "edge-runtime-demo"
    assert info[0]["task"] == "detection"
    assert info[0]["fallback_from"] == ""
    assert len(info[0]["sha1"]) == 40
    assert value(samples, "edge_runtime_model_ready") == 1


async def test_metrics_endpoint_is_not_admission_controlled(client, http, start_server, demo_dir):
    """A saturated server still answers /metrics (and health) at once."""
    settings = http.settings(server={"inference_workers": 1, "max_inflight": 1})
    server = start_server(demo_dir, settings, loader=slow_loader(0.5))
    busy = asyncio.create_task(post(client, server.url + "/image", http.belt()))
    await asyncio.sleep(0.1)
    start = time.perf_counter()
    await scrape(client, server.url)
    async with client.get(server.url + "/health/ready") as response:
        assert response.status == 200
    assert time.perf_counter() - start < 0.3
    assert await busy == 200

"""deploy/grafana/edge-runtime.json: the dashboard's structure, checked without Grafana (none runs here).

Whether each query parses and selects real series is checked against a real Prometheus scraping the
demo in tests/integration/test_prometheus_scrape.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from edge_runtime import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "edge-runtime.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VARIABLES = {"$instance", "$camera", "$__rate_interval", "$__range"}  # what the queries may use
METRIC = re.compile(r"\bedge_runtime_[a-z0-9_]+")


def load() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


def query_panels() -> list[dict[str, Any]]:
    return [p for p in all_panels(load()["panels"]) if p["type"] != "row"]


def exprs() -> list[str]:
    return [t["expr"] for p in query_panels() for t in p["targets"]]


def exported_series() -> set[str]:
    """Every series name the runtime's metrics can export (a counter's _total, a histogram's _bucket...)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    names: set[str] = set()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.describe():
                names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def test_the_dashboard_is_a_grafana_dashboard_model() -> None:
    data = load()
    assert 36 <= data["schemaVersion"] <= 41
    assert data["uid"] == "edge-runtime" and data["title"]
    assert data["id"] is None  # an import must not carry another Grafana's database id
    assert {"from", "to"} <= data["time"].keys()


def test_template_variables() -> None:
    variables = {v["name"]: v for v in load()["templating"]["list"]}
    assert {"datasource", "instance", "camera"} <= variables.keys()
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for name, label_of in (("instance", "instance"), ("camera", "camera")):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"] == DATASOURCE
        definition = var["query"]["query"]
        assert definition == var["definition"]
        assert re.fullmatch(rf"label_values\(edge_runtime_[a-z_]+(\{{.*\}})?, {label_of}\)", definition), (
            definition
        )
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"
    # the cameras offered are those of the instances chosen
    assert 'instance=~"$instance"' in variables["camera"]["definition"]


def test_every_panel_has_a_title_an_id_and_a_place() -> None:
    panels = list(all_panels(load()["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    places: list[tuple[str, set[tuple[int, int]]]] = []
    for panel in panels:
        assert panel.get("title"), panel
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        for other, taken in places:
            assert not cells & taken, f"{panel['title']!r} overlaps {other!r}"
        places.append((panel["title"], cells))


def test_every_panel_queries_the_templated_prometheus_datasource() -> None:
    panels = query_panels()
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert isinstance(target["expr"], str) and target["expr"].strip(), panel["title"]


def test_queries_use_only_defined_variables_and_filter_by_instance() -> None:
    for expr in exprs():
        used = set(re.findall(r"\$\w+", expr))
        assert used <= VARIABLES, f"undefined variables {used - VARIABLES} in {expr}"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
        # every metric selector takes the instance variable (else the dashboard mixes devices)
        for match in METRIC.finditer(expr):
            selector = expr[match.end() :]
            assert selector.startswith('{instance=~"$instance"'), f"{match.group()} is not filtered: {expr}"


def test_camera_panels_take_the_camera_variable() -> None:
    for expr in exprs():
        for name in set(METRIC.findall(expr)):
            if name.startswith(("edge_runtime_camera_", "edge_runtime_frame_age", "edge_runtime_events")):
                assert f'{name}{{instance=~"$instance",camera=~"$camera"' in expr, expr


def test_every_metric_queried_is_one_the_runtime_exports() -> None:
    exported = exported_series()
    assert (
        "edge_runtime_http_requests_total" in exported and "edge_runtime_frame_age_seconds_bucket" in exported
    )
    queried = {name for expr in exprs() for name in METRIC.findall(expr)}
    assert queried <= exported, f"not exported by edge_runtime.metrics: {sorted(queried - exported)}"


@pytest.mark.parametrize(
    "metric",
    [
        "edge_runtime_http_requests_total",
        "edge_runtime_http_request_seconds_bucket",
        "edge_runtime_stage_seconds_bucket",
        "edge_runtime_model_info",
        "edge_runtime_model_loads_total",
        "edge_runtime_camera_state",
        "edge_runtime_frame_age_seconds_bucket",
        "edge_runtime_camera_sampling_period_seconds",
        "edge_runtime_camera_sampling_overruns_total",
        "edge_runtime_camera_frames_dropped_total",
        "edge_runtime_events_total",
        "edge_runtime_sink_connected",
        "edge_runtime_sink_dropped_total",
        "edge_runtime_outbox_depth",
        "edge_runtime_outbox_oldest_age_seconds",
    ],
)
def test_the_dashboard_shows(metric: str) -> None:
    assert any(re.search(rf"\b{metric}\b", expr) for expr in exprs()), f"no panel queries {metric}"


def test_latency_panels_are_p95_by_route_and_by_stage() -> None:
    joined = "\n".join(exprs())
    assert re.search(r"histogram_quantile\(0\.95, sum by \([^)]*\broute\b[^)]*\ble\b", joined)
    assert re.search(r"histogram_quantile\(0\.95, sum by \([^)]*\bstage\b[^)]*\ble\b", joined)

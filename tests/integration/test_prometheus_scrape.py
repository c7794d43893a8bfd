"""A real Prometheus scrapes the real runtime (`edge-runtime serve`, the built-in demo's model and
conveyor camera) with deploy/prometheus/prometheus.yml and alerts.yml; every query of the Grafana
dashboard (deploy/grafana/edge-runtime.json) and every alert expression evaluates there without error,
and every metric they select has series.

What the demo alone does not produce, the run's config file adds (nothing is excluded):
  - a second camera whose RTSP server refuses connections: stream failures, the backoff state;
  - an MQTT sink whose broker is not there: sink_connected 0, failed deliveries, an outbox backlog,
    and with events.outbox_max_events 1, messages dropped for a full outbox;
  - a prediction, a 400 and a 404 over HTTP: the request counters and latency histogram;
  - a station on the demo camera and one part triggered: the station metrics.
The camera's overrun counter exists from its start (at 0), and the model-load counter has both
outcomes from the start.

Prometheus (Debian's `prometheus` package; .ci/run installs it) must be on PATH: without it this fails.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from processes import free_port, wait_ready

from edge_runtime.demo.camera import DEMO_CAMERA
from edge_runtime.demo.model import BELT_GREY

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "edge-runtime.json"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
INSTANCE = "demo"  # the instance label our scrape config gives the runtime
CAMERAS = ("demo-conveyor", "unreachable")
# How Grafana would fill the dashboard's variables for this run (a multi-value variable is a regex).
VARIABLES = {
    "$__rate_interval": "10s",
    "$__range": "1m",
    "$instance": INSTANCE,
    "$camera": "(" + "|".join(CAMERAS) + ")",
}
METRIC = re.compile(r"\b(?:edge_runtime_[a-z0-9_]+|up)\b(?=\s*[{\[)])")
DEADLINE_S = 30.0


def fill(expr: str) -> str:
    for name, value in VARIABLES.items():  # $__rate_interval before anything shorter could match
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable left unfilled: {expr}"
    return expr


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel (rows' nested panels too)."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    return [(p["title"], t["expr"]) for p in walk(dashboard()["panels"]) for t in p.get("targets", [])]


def variable_queries() -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of each label_values() variable."""
    found = []
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
            assert match, var
            found.append((var["name"], match.group(1), match.group(2)))
    return found


def alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


# --------------------------------------------------------------------------------------------------
# The processes


def runtime_config(tmp_path: Path) -> Path:
    config = {
        "cameras": [
            # decode: all, for the station below (its camera must decode every frame)
            DEMO_CAMERA.model_dump(mode="json", exclude_defaults=True) | {"decode": "all"},
            {
                "id": "unreachable",
                "url": f"rtsp://127.0.0.1:{free_port()}/nothing",  # nothing listens: refused at once
                "backoff_initial_s": 0.2,
                "backoff_max_s": 1.0,
            },
        ],
        "stations": [{"id": "s1", "cameras": [DEMO_CAMERA.id], "defects": [{"tag": "stain"}]}],
        "events": {"outbox_max_events": 1},
        "sinks": {"mqtt": {"host": "127.0.0.1", "port": free_port(), "reconnect_max_s": 2.0}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prometheus_config(tmp_path: Path, target: str) -> Path:
    """deploy/prometheus/prometheus.yml, scraping `target` every second with the rules by absolute path."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ALERTS)]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "edge_runtime"]
    job.update(scrape_interval="1s", scrape_timeout="1s")
    job["static_configs"] = [{"targets": [target], "labels": {"instance": INSTANCE}}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(
    args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # a file, never a pipe: nobody reads a pipe while we wait
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def http(method: str, url: str, body: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return int(exc.code)


def belt_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (BELT_GREY, BELT_GREY, BELT_GREY)).save(buffer, "PNG")
    return buffer.getvalue()


class PrometheusApi:
    def __init__(self, base: str, log: Path) -> None:
        self.base = base
        self.log = log

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}" if params else self.base + path
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # a query that does not parse or evaluate: 400/422
            return json.loads(exc.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expr)
        assert answer["status"] == "success", f"{expr}\n-> {answer.get('errorType')}: {answer.get('error')}"
        result = answer["data"]["result"]
        assert isinstance(result, list)
        return result

    def until(
        self, what: str, check: Callable[[], Any], deadline: float, seen: Callable[[], object] | None = None
    ) -> Any:
        """check() until it returns something truthy; past the deadline, fail with what was last seen."""
        while True:
            outcome = check()
            if outcome or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        last = seen() if seen is not None else outcome
        assert outcome, (
            f"{what}: not within {DEADLINE_S:.0f} s (last: {last!r})\n{self.log.read_text()[-2000:]}"
        )
        return outcome


# --------------------------------------------------------------------------------------------------


def test_prometheus_scrapes_the_demo_and_every_dashboard_query_and_alert_evaluates(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail(
            "prometheus not found: install Debian's `prometheus` package (apt-get install prometheus)"
        )
    serve = Path(sys.executable).with_name("edge-runtime")
    assert serve.is_file(), f"{serve} missing: install the package into the venv (pip install -e .)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_RUNTIME_", "IOTEDGE_"))}
    env["TMPDIR"] = str(tmp_path)  # the built-in demo model is written under the temp dir

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    runtime_log = tmp_path / "serve.log"
    args = [str(serve), "serve", "--port", str(port), "--config", str(runtime_config(tmp_path))]
    runtime = start(args, tmp_path, runtime_log, env)  # cwd tmp_path: its var/ (outbox, events) lands there
    processes = [runtime]
    try:
        wait_ready(base, runtime, runtime_log)
        assert http("POST", base + "/image", belt_png()) == 200
        assert http("POST", base + "/image", b"not an image") == 400
        assert http("POST", base + "/nowhere", b"x") == 404
        assert http("POST", base + "/stations/s1/trigger", b'{"partId": "p1"}') == 200  # station metrics

        web = f"127.0.0.1:{free_port()}"
        prometheus_log = tmp_path / "prometheus.log"
        processes.append(
            start(
                [
                    prometheus,
                    f"--config.file={prometheus_config(tmp_path, f'127.0.0.1:{port}')}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address={web}",
                ],
                tmp_path,
                prometheus_log,
            )
        )
        api = PrometheusApi(f"http://{web}", prometheus_log)
        deadline = time.monotonic() + DEADLINE_S

        def prometheus_ready() -> bool:
            assert processes[1].poll() is None, f"prometheus exited:\n{prometheus_log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(api.base + "/-/ready", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        api.until("prometheus ready", prometheus_ready, deadline)

        queries = dashboard_queries()
        alerts = alert_exprs()
        wanted = {name for _, expr in queries for name in metric_names(expr)}
        wanted |= {name for expr in alerts.values() for name in metric_names(expr)}
        wanted |= {name for _, selector, _ in variable_queries() for name in metric_names(selector + "{")}
        assert {"up", "edge_runtime_model_loads_total", "edge_runtime_sink_connected"} <= wanted

        absent: list[set[str]] = [wanted]

        def every_metric_present() -> bool:
            present = {
                s["metric"]["__name__"] for s in api.query(f'count by (__name__) ({{instance="{INSTANCE}"}})')
            }
            absent[0] = wanted - present
            return not absent[0]

        # Every metric the dashboard and the alerts select has series (drops need a few demo events).
        api.until("a series for every metric queried", every_metric_present, deadline, lambda: absent[0])
        api.until(
            "three scrapes",
            lambda: [s for s in api.query(f'count_over_time(up{{instance="{INSTANCE}"}}[1m]) >= 3')],
            deadline,
        )
        assert api.query(f'up{{job="edge_runtime",instance="{INSTANCE}"}}')[0]["value"][1] == "1"

        # The dashboard: each panel query evaluates and returns series for this runtime.
        for title, expr in queries:
            assert api.query(fill(expr)), f"panel {title!r}: no series for {fill(expr)}"
        for name, selector, label in variable_queries():
            values = {s["metric"].get(label) for s in api.query(f"count by ({label}) ({fill(selector)})")}
            expected = {INSTANCE} if name == "instance" else set(CAMERAS)
            assert expected <= values, f"variable {name}: {values}"

        # The alerts: each expression evaluates; Prometheus's own evaluation of the rule file is healthy,
        # and the two faults this run has (no broker, a refused camera) are seen by the right alerts.
        for expr in alerts.values():
            api.query(expr)

        def evaluated_rules() -> list[dict[str, Any]] | None:
            groups = api.get("/api/v1/rules")["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            done = rules and not any(r["lastEvaluation"].startswith("0001-") for r in rules)  # Go's zero time
            return rules if done else None

        rules = api.until("every rule evaluated", evaluated_rules, deadline)
        assert {r["name"] for r in rules} == set(alerts)
        for rule in rules:
            assert rule["health"] == "ok" and not rule.get("lastError"), rule

        def active() -> set[tuple[str, str]]:
            found = set()
            for alert in api.get("/api/v1/alerts")["data"]["alerts"]:
                labels = alert["labels"]
                found.add((labels["alertname"], labels.get("camera") or labels.get("sink") or ""))
            return found

        faults = {("EdgeRuntimeSinkDisconnected", "mqtt"), ("EdgeRuntimeCameraDown", "unreachable")}
        seen: list[set[tuple[str, str]]] = [set()]

        def faults_alerted() -> bool:
            seen[0] = active()
            return faults <= seen[0]

        api.until(f"alerts {sorted(faults)} pending", faults_alerted, deadline, lambda: seen[0])
        assert ("EdgeRuntimeCameraDown", "demo-conveyor") not in seen[0]
        assert not {name for name, _ in seen[0]} & {"EdgeRuntimeDown", "EdgeRuntimeModelNotReady"}
    finally:
        for proc in reversed(processes):
            stop(proc)

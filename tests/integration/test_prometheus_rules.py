"""deploy/prometheus: promtool checks the rules and the config, and runs the alerts' unit tests
(alerts.test.yml); every alert is covered there, firing and silent, and carries what the README says.

promtool comes with Debian's `prometheus` package (.ci/run installs it); without it these tests fail.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"
ALERT_TESTS = DEPLOY / "alerts.test.yml"
CONFIG = DEPLOY / "prometheus.yml"


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed ({done.returncode}):\n{output}"
    return output


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_alert_rules() -> None:
    output = promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(rules())} rules found" in output


def test_promtool_runs_the_alert_unit_tests() -> None:
    output = promtool("test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in output and "FAILED" not in output


def test_promtool_checks_the_config_and_its_rule_file(tmp_path: Path) -> None:
    # In place: rule_files is relative to the config file.
    output = promtool("check", "config", str(CONFIG))
    assert "SUCCESS: 1 rule files found" in output and f"SUCCESS: {len(rules())} rules found" in output
    # A copy elsewhere, pointing at the rules by absolute path (as the scrape test does).
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    output = promtool("check", "config", str(copy), cwd=tmp_path)
    assert "SUCCESS: 1 rule files found" in output


def test_the_config_scrapes_the_runtime_as_job_edge_runtime() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "edge_runtime"]
    assert job["metrics_path"] == "/metrics"
    for group in job["static_configs"]:
        assert group["targets"] and group["labels"]["instance"], group  # one instance name per module


def test_every_alert_has_a_severity_a_summary_and_a_description() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), rule[
            "alert"
        ]
        assert 'job="edge_runtime"' in rule["expr"], rule["alert"]  # the job prometheus.yml names


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    cases = [
        case for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for case in test["alert_rule_test"]
    ]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    silent = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {rule["alert"] for rule in rules()}
    assert names - fired == set(), "alerts never shown firing in alerts.test.yml"
    assert names - silent == set(), "alerts never shown silent in alerts.test.yml"
    # promtool compares the exact set of alerts firing at each eval_time: an alert on the well-behaved
    # series beside the misbehaving ones fails test_promtool_runs_the_alert_unit_tests.

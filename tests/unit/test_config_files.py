"""Config files as users write them: every README YAML example and examples/config.yaml load as pasted; the
loader refuses duplicate keys (PyYAML would keep the last silently) and says what is wrong in words."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.settings import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
MODULE_ENV = {"IOTEDGE_MODULEID": "edgeRuntime"}  # the sinks example has the iothub sink: needs the hub


def test_the_readme_has_yaml_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[b.split(":")[0].strip() for b in BLOCKS])
def test_every_yaml_example_loads_as_a_config_file(block: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(block)
    load_settings(config, env=MODULE_ENV)


def test_a_duplicate_key_is_refused_with_both_lines(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  device: cpu\nserver:\n  port: 8080\nmodel:\n  path: mine.zip\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'model' on line 5 \(first on line 1\)"):
        load_settings(config, env={})
    config.write_text("cameras:\n  - id: a\n    url: x.mp4\n    fps: 1\n    fps: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'fps' on line 5"):
        load_settings(config, env={})


def test_the_example_config_loads() -> None:
    example = README.parent / "examples" / "config.yaml"
    settings = load_settings(example, env=MODULE_ENV)
    assert [camera.id for camera in settings.cameras] == ["bench", "line3-top"]


def test_a_short_admin_key_is_refused_in_characters(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("server:\n  admin_key: short\n")
    with pytest.raises(ConfigError, match="at least 12 characters"):
        load_settings(config, env={})


def test_secrets_may_be_read_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret-from-a-file\n")
    camera = tmp_path / "camera-url"
    camera.write_text("rtsp://viewer:pw@10.0.0.21/stream1\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"sinks:\n  mqtt: {{host: broker, password_file: {secret}}}\n"
        f"cameras:\n  - {{id: top, url_file: {camera}}}\n"
    )
    settings = load_settings(config, env={})
    assert settings.sinks.mqtt is not None and settings.sinks.mqtt.password is not None
    assert settings.sinks.mqtt.password.get_secret_value() == "s3cret-from-a-file"
    assert settings.cameras[0].url == "rtsp://viewer:pw@10.0.0.21/stream1"


def test_a_missing_or_doubled_secret_file_is_named_not_shown(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("sinks:\n  mqtt: {host: broker, password_file: /nonexistent/pw}\n")
    with pytest.raises(ConfigError, match=r"sinks\.mqtt\.password_file: cannot read /nonexistent/pw"):
        load_settings(config, env={})
    secret = tmp_path / "pw"
    secret.write_text("hidden-value\n")
    config.write_text(f"sinks:\n  mqtt: {{host: broker, password: x, password_file: {secret}}}\n")
    with pytest.raises(ConfigError, match="not both") as info:
        load_settings(config, env={})
    assert "hidden-value" not in str(info.value)


def test_paths_in_a_config_file_are_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "line3"
    folder.mkdir()
    (folder / "line.yaml").write_text(
        "model: {path: export.zip}\n"
        "cameras:\n  - {id: bench, url: recordings/a.mp4}\n  - {id: top, url: rtsp://10.0.0.21/s}\n"
        "events: {jsonl_path: out/events.jsonl, outbox_path: /var/lib/edge/outbox.sqlite3}\n"
    )
    settings = load_settings(folder / "line.yaml", env={})
    assert settings.model.path == folder / "export.zip"
    assert [c.url for c in settings.cameras] == [str(folder / "recordings/a.mp4"), "rtsp://10.0.0.21/s"]
    assert settings.events.jsonl_path == folder / "out/events.jsonl"
    assert str(settings.events.outbox_path) == "/var/lib/edge/outbox.sqlite3"  # absolute stays
    assert str(settings.events.snapshot_dir) == "var/snapshots"  # a default stays where serve runs

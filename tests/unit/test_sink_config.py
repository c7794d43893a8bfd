"""Settings for sinks, the hub, the outbox and model download, and the errors sink construction raises:
every one a ConfigError that names the setting."""

from __future__ import annotations

import gc
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest
from certs import TlsFiles, make_tls_files

from edge_runtime.errors import ConfigError
from edge_runtime.settings import (
    IotHubSettings,
    MqttSettings,
    Settings,
    TlsSettings,
    build_settings,
    load_settings,
)
from edge_runtime.sinks.build import build_sinks
from edge_runtime.sinks.iothub import IotHubSink
from edge_runtime.sinks.jsonl import JsonlSink
from edge_runtime.sinks.mqtt import MqttSink
from edge_runtime.status import StatusBoard

SHA256 = "ab" * 32


# --------------------------------------------------------------------------------------------------
# sinks and hub


def test_no_sinks_section_means_no_network_sinks() -> None:
    settings = build_settings({})
    assert settings.sinks.mqtt is None and settings.sinks.iothub is None
    assert settings.hub.enabled is None and not settings.hub_enabled


@pytest.mark.parametrize("name", ["kafka", "MQTT", "jsonl"])
def test_an_unknown_sink_is_named(name: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"invalid settings: .*unknown sink '{name}' \(known: mqtt, iothub\)"
    ):
        build_settings({"sinks": {"mqtt": {"host": "broker"}, name: {}}})


def test_mqtt_settings_defaults_and_ports() -> None:
    settings = build_settings({"sinks": {"mqtt": {"host": "broker", "username": "u", "password": "pw"}}})
    mqtt = settings.sinks.mqtt
    assert mqtt is not None
    assert (mqtt.effective_port, mqtt.qos, mqtt.topic_prefix, mqtt.send_events) == (
        1883,
        1,
        "edge_runtime",
        True,
    )
    assert mqtt.password is not None and "pw" not in repr(mqtt)
    assert (mqtt.rate_limit_per_minute, mqtt.summary_interval_s) == (0.0, 0.0)
    assert MqttSettings(host="b", tls=TlsSettings()).effective_port == 8883
    assert MqttSettings(host="b", tls=TlsSettings(), port=9000).effective_port == 9000


@pytest.mark.parametrize(
    "mqtt",
    [
        {},
        {"host": ""},
        {"host": "b", "qos": 3},
        {"host": "b", "port": 70000},
        {"host": "b", "topic_prefix": "plant/#"},
        {"host": "b", "topic_prefix": "plant/+/x"},
        {"host": "b", "keepalive_s": 1},
        {"host": "b", "rate_limit_per_minute": -1},
        {"host": "b", "summary_interval_s": -1},
        {"host": "b", "publish_timeout_s": 0},
        {"host": "b", "retain": True},
        {"host": "b", "tls": {"ca": "x"}},
        {"host": "b", "reconnect_min_s": 0.1},
        {"host": "b", "reconnect_max_s": 0.2, "reconnect_min_s": 0.2},
        {"host": "b", "reconnect_max_s": 0.5},
    ],
    ids=[
        "no-host",
        "empty-host",
        "qos-3",
        "port",
        "prefix-hash",
        "prefix-plus",
        "keepalive",
        "negative-rate",
        "negative-summary",
        "zero-timeout",
        "unknown-field",
        "unknown-tls-field",
        "reconnect-min-below-floor",
        "reconnect-max-below-floor",
        "reconnect-max-below-min",
    ],
)
def test_bad_mqtt_settings(mqtt: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"invalid settings: sinks\.mqtt"):
        build_settings({"sinks": {"mqtt": mqtt}})


def test_reconnect_delays_name_the_problem() -> None:
    with pytest.raises(
        ConfigError, match=r"reconnect_max_s \(0\.5\) must not be below reconnect_min_s \(1\)"
    ):
        build_settings({"sinks": {"mqtt": {"host": "b", "reconnect_max_s": 0.5}}})
    with pytest.raises(ConfigError, match=r"sinks\.mqtt\.reconnect_min_s: .*greater than or equal to 0\.5"):
        build_settings({"sinks": {"mqtt": {"host": "b", "reconnect_min_s": 0}}})
    ok = build_settings({"sinks": {"mqtt": {"host": "b", "reconnect_min_s": 0.5, "reconnect_max_s": 0.75}}})
    assert ok.sinks.mqtt is not None and ok.sinks.mqtt.reconnect_max_s == 0.75


def test_iothub_sink_needs_the_hub() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.iothub needs hub\.connection_string"):
        build_settings({"sinks": {"iothub": {}}})
    with pytest.raises(ConfigError, match=r"sinks\.iothub needs"):  # switched off explicitly
        build_settings(
            {"sinks": {"iothub": {}}, "hub": {"enabled": False, "connection_string": "HostName=h;x=y"}}
        )
    by_string = build_settings({"sinks": {"iothub": {}}, "hub": {"connection_string": "HostName=h;x=y"}})
    assert by_string.hub_enabled and by_string.sinks.iothub == IotHubSettings()
    assert "HostName" not in repr(by_string.hub)
    assert build_settings({"sinks": {"iothub": {"output": "line1"}}, "hub": {"enabled": True}}).hub_enabled


@pytest.mark.parametrize("output", ["", "has space", "a/b", "x" * 65])
def test_bad_iothub_output_name(output: str) -> None:
    with pytest.raises(ConfigError, match=r"sinks\.iothub\.output"):
        build_settings({"sinks": {"iothub": {"output": output}}, "hub": {"enabled": True}})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"IOTEDGE_MODULEID": "edgeRuntime"}, True),
        ({"EdgeHubConnectionString": "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k"}, True),
        ({"IOTEDGE_MODULEID": ""}, None),
        ({"IOTEDGE_MODULEID": "edgeRuntime", "EDGE_RUNTIME_HUB__ENABLED": "false"}, False),
    ],
    ids=["plain", "iotedge", "dev-tools", "empty-variable", "switched-off"],
)
def test_the_iot_edge_environment_turns_the_hub_on(env: dict[str, str], expected: bool | None) -> None:
    assert load_settings(env=env).hub.enabled is expected


def test_iothub_sink_inside_iot_edge_needs_no_connection_string() -> None:
    env = {"IOTEDGE_MODULEID": "edgeRuntime", "EDGE_RUNTIME_SINKS__IOTHUB__OUTPUT": "line1"}
    settings = load_settings(env=env)
    assert settings.hub_enabled and settings.sinks.iothub == IotHubSettings(output="line1")
    with pytest.raises(ConfigError, match=r"sinks\.iothub needs"):
        load_settings(env={"EDGE_RUNTIME_SINKS__IOTHUB__OUTPUT": "line1"})


def test_the_iot_edge_environment_keeps_a_hub_section_from_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("hub:\n  connect_retry_max_s: 7\nsinks:\n  iothub: {}\n")
    settings = load_settings(config, env={"IOTEDGE_MODULEID": "edgeRuntime"})
    assert settings.hub.enabled is True and settings.hub.connect_retry_max_s == 7


# --------------------------------------------------------------------------------------------------
# outbox and model download


def test_outbox_settings() -> None:
    events = build_settings({}).events
    assert events.outbox_path == Path("var/outbox.sqlite3")
    assert (events.outbox_max_events, events.outbox_max_age_s) == (100_000, 7 * 24 * 3600.0)
    events = build_settings(
        {"events": {"outbox_path": "/data/o.db", "outbox_max_events": 5, "outbox_max_age_s": 60}}
    ).events
    assert (events.outbox_path, events.outbox_max_events, events.outbox_max_age_s) == (
        Path("/data/o.db"),
        5,
        60,
    )


@pytest.mark.parametrize(
    "events", [{"outbox_max_events": 0}, {"outbox_max_age_s": 0}, {"outbox_max_age_s": -1}, {"outbox": "x"}]
)
def test_bad_outbox_settings(events: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"invalid settings: events\."):
        build_settings({"events": events})


def test_model_url_needs_sha256_and_the_error_hides_the_url() -> None:
    url = "https://store.blob.core.windows.net/models/export.zip?sv=2022&sig=TOPSECRET"
    with pytest.raises(ConfigError, match=r"model\.url needs model\.sha256") as caught:
        build_settings({"model": {"url": url}})
    assert "TOPSECRET" not in str(caught.value)
    model = build_settings({"model": {"url": url, "sha256": SHA256}}).model
    assert model.url is not None and model.url.get_secret_value() == url
    assert "TOPSECRET" not in repr(model)


@pytest.mark.parametrize("sha256", ["ab" * 31, "zz" * 32, "ab" * 33, ""])
def test_bad_model_sha256(sha256: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.sha256"):
        build_settings({"model": {"url": "https://h/m.zip", "sha256": sha256}})


# --------------------------------------------------------------------------------------------------
# cameras, rules and ROIs keyed by name (module twins merge objects; null removes an entry)


def test_cameras_rules_and_rois_as_mappings() -> None:
    settings = build_settings(
        {
            "cameras": {
                "line1": {
                    "url": "synthetic://conveyor",
                    "rules": {"scratch": {"k": 3, "n": 3}, "*": {}, "dent": None},
                    "rois": {"station-a": {"x": 0.5, "y": 0, "width": 0.5, "height": 1}},
                },
                "removed": None,
                "line2": {"url": "rtsp://10.0.0.2/s", "id": "ignored"},
            }
        }
    )
    assert [c.id for c in settings.cameras] == ["line1", "line2"], "the key is the id; null removes"
    line1 = settings.cameras[0]
    assert [(r.tag, r.k) for r in line1.rules] == [("scratch", 3), ("*", 2)]
    assert [(r.name, r.x) for r in line1.rois] == [("station-a", 0.5)]
    assert settings.cameras[1].rules == ()  # no implicit rule: no rules, no events
    as_list = build_settings(
        {
            "cameras": [
                {
                    "id": "line1",
                    "url": "synthetic://conveyor",
                    "rules": [{"tag": "scratch", "k": 3, "n": 3}, {"tag": "*"}],
                    "rois": [{"name": "station-a", "x": 0.5, "y": 0, "width": 0.5, "height": 1}],
                },
                {"id": "line2", "url": "rtsp://10.0.0.2/s"},
            ]
        }
    )
    assert as_list.cameras == settings.cameras


@pytest.mark.parametrize(
    ("cameras", "message"),
    [
        ({"line1": "synthetic://conveyor"}, r"'line1': expected an object"),
        ({"bad id": {"url": "synthetic://conveyor"}}, r"cameras\.0\.id"),
        ({"line1": {"url": "synthetic://conveyor", "rules": {"x": 5}}}, r"'x': expected an object"),
        ({"line1": {"url": "synthetic://conveyor", "rules": {"x": {"k": 4, "n": 3}}}}, r"k \(4\) must not"),
        ({"line1": {"url": "synthetic://conveyor", "rois": {"r": {"x": 0.9, "y": 0, "width": 0.5,
                                                                    "height": 1}}}},
         "reaches outside the frame"),
    ],
    ids=["camera-not-object", "bad-key", "rule-not-object", "rule-k>n", "roi-outside"],
)  # fmt: skip
def test_bad_mapping_entries(cameras: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_settings({"cameras": cameras})


# --------------------------------------------------------------------------------------------------
# MqttSink construction: TLS files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def mqtt_settings(**tls: Any) -> MqttSettings:
    return MqttSettings(host="broker.local", tls=TlsSettings(**tls))


def test_mqtt_sink_builds_with_tls_and_mutual_tls(tls: TlsFiles) -> None:
    sink = MqttSink(mqtt_settings(ca_file=tls.ca), StatusBoard())
    assert sink.status().to_dict() == {"connected": False, "broker": "broker.local:8883", "last_error": None}
    assert sink.client_id == f"edge-runtime-{socket.gethostname()}"
    mutual = MqttSink(
        MqttSettings(
            host="b",
            client_id="line1",
            tls=TlsSettings(ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.client_key),
        )
    )
    assert mutual.client_id == "line1" and mutual.delivery is mutual.settings
    assert MqttSink(MqttSettings(host="b")).status().target == ("broker", "b:1883")


@pytest.mark.parametrize("field", ["ca_file", "cert_file", "key_file"])
def test_an_unreadable_tls_file_is_named(tls: TlsFiles, tmp_path: Path, field: str) -> None:
    files = {"ca_file": tls.ca, "cert_file": tls.client_cert, "key_file": tls.client_key}
    files[field] = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=rf"^sinks\.mqtt\.tls\.{field}: cannot read .*missing\.pem"):
        MqttSink(mqtt_settings(**files))
    files[field] = tmp_path  # a folder is not a file either
    with pytest.raises(ConfigError, match=rf"^sinks\.mqtt\.tls\.{field}: cannot read"):
        MqttSink(mqtt_settings(**files))


@pytest.mark.parametrize("given", ["cert_file", "key_file"])
def test_cert_and_key_go_together(tls: TlsFiles, given: str) -> None:
    files = {"cert_file": tls.client_cert} if given == "cert_file" else {"key_file": tls.client_key}
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.tls: cert_file and key_file go together"):
        MqttSink(mqtt_settings(ca_file=tls.ca, **files))


def test_unusable_certificate_files(tls: TlsFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.tls: cannot use the certificate files"):
        MqttSink(mqtt_settings(ca_file=garbage))
    with pytest.raises(ConfigError, match=r"^sinks\.mqtt\.tls: cannot use the certificate files"):
        MqttSink(mqtt_settings(ca_file=tls.ca, cert_file=tls.client_cert, key_file=tls.server_key))


# --------------------------------------------------------------------------------------------------
# build_sinks


def sink_settings(tmp_path: Path, **extra: Any) -> Settings:
    return build_settings({"events": {"jsonl_path": str(tmp_path / "events.jsonl")}, **extra})


async def test_build_sinks_from_settings(tmp_path: Path, tls: TlsFiles) -> None:
    settings = sink_settings(
        tmp_path,
        sinks={"mqtt": {"host": "b", "tls": {"ca_file": str(tls.ca)}}, "iothub": {"output": "line1"}},
        hub={"enabled": True},
    )
    hub = object()
    sinks = build_sinks(settings.events, settings.sinks, None, hub)  # type: ignore[arg-type]
    try:
        assert [type(s) for s in sinks] == [JsonlSink, MqttSink, IotHubSink]
        assert [s.name for s in sinks] == ["jsonl", "mqtt", "iothub"]
        assert sinks[2].delivery == IotHubSettings(output="line1")
    finally:
        await sinks[0].close()
    no_jsonl = build_settings({"events": {"jsonl_path": None}})
    assert build_sinks(no_jsonl.events, no_jsonl.sinks, None, None) == []


def test_a_sink_config_error_leaks_no_open_file(tmp_path: Path) -> None:
    settings = sink_settings(
        tmp_path, sinks={"mqtt": {"host": "b", "tls": {"ca_file": str(tmp_path / "no.pem")}}}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match=r"sinks\.mqtt\.tls\.ca_file"):
            build_sinks(settings.events, settings.sinks, None, None)
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == [], [str(w.message) for w in leaks]


def test_admin_key_must_not_be_empty_or_short() -> None:
    for key in ("", "short"):
        with pytest.raises(ConfigError, match=r"server\.admin_key"):
            build_settings({"server": {"admin_key": key}})
    assert build_settings({"server": {"admin_key": "a-long-enough-key"}}).server.admin_key is not None


def test_download_errors_never_carry_the_sas_token() -> None:
    from edge_runtime.model.download import QUERY

    message = "400, message='Bad Request', url='https://acct.blob.core.windows.net/m/v7.zip?sv=1&sig=SECRET'"
    cleaned = QUERY.sub("?***", message)
    assert "SECRET" not in cleaned and "v7.zip?***" in cleaned

"""IoT Edge deployment templates: valid against the template schema and, as the generated manifest,
against edgeAgent 1.1 and edgeHub 1.2; routes name existing modules and the output the code sends on; the
variants differ only in the accelerator; the module twin is valid for the runtime's settings model, and the
effective settings (environment + IoT Edge + twin) are what the module should run with. Broken twins and
templates are caught.

How the templates are expanded and checked: tests/deployment_files.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deployment_files import (
    ACCELERATORS,
    MODULE,
    REPO,
    SECRET_FILES,
    TEMPLATES,
    TWIN_DEVICES,
    TWIN_VALUE_MAX_CHUNKS,
    TWIN_VALUE_MAX_SIZE,
    agent,
    all_modules,
    bind_mounts,
    code_outputs,
    effective_settings,
    expand,
    hub,
    leftover_placeholders,
    load_expanded,
    load_mounted,
    module_env,
    route_errors,
    route_text,
    schema_errors,
    to_manifest,
    twin_sections,
)

from edge_runtime.errors import ConfigError
from edge_runtime.settings import ENV_PREFIX, IotHubSettings, build_settings

# What the twin may set (the rest is the module's environment); cameras/rules/rois are keyed objects.
TWIN_SECTIONS = {"model", "cameras", "sinks", "events", "log_level"}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_template_validates_against_the_template_schema(template: str) -> None:
    assert schema_errors("azure-iot-edge-deployment-template-4.0.json", load_expanded(template)) == []


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_generated_manifest_validates_against_edge_agent_1_1_and_edge_hub_1_2(template: str) -> None:
    manifest = to_manifest(load_expanded(template))
    content = manifest["modulesContent"]
    agent_doc = {"$edgeAgent": content["$edgeAgent"]}
    hub_doc = {"$edgeHub": content["$edgeHub"]}
    assert schema_errors("azure-iot-edgeagent-deployment-1.1.json", agent_doc) == []
    assert schema_errors("azure-iot-edgehub-deployment-1.2.json", hub_doc) == []
    for name, module in all_modules(manifest):
        settings = module["settings"]
        chunks = [settings["createOptions"]] + [
            settings[f"createOptions{i:02d}"]
            for i in range(1, TWIN_VALUE_MAX_CHUNKS)
            if f"createOptions{i:02d}" in settings
        ]
        assert all(len(chunk) <= TWIN_VALUE_MAX_SIZE for chunk in chunks), name
        assert isinstance(json.loads("".join(chunks)), dict), name


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_routes_name_existing_modules_and_the_output_the_code_sends_on(template: str, tmp_path: Path) -> None:
    doc = load_mounted(template, tmp_path)
    outputs = code_outputs(doc)
    assert outputs[MODULE] == {IotHubSettings().output} == {"defects"}
    assert route_errors(doc, outputs) == []
    upstream = [
        route_text(v)
        for v in hub(doc)["routes"].values()
        if route_text(v).rstrip().endswith("INTO $upstream")
    ]
    assert any(f"/messages/modules/{MODULE}/outputs/defects" in r for r in upstream), upstream
    assert hub(doc)["schemaVersion"] == "1.2"
    assert hub(doc)["storeAndForwardConfiguration"]["timeToLiveSecs"] > 0


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_templates_deploy_only_this_module(template: str) -> None:
    """No placeholder modules (a route to another module is a README example, added with that module)."""
    doc = load_expanded(template)
    assert set(agent(doc)["modules"]) == {MODULE}
    assert set(agent(doc)["systemModules"]) == {"edgeAgent", "edgeHub"}


def test_templates_differ_only_in_the_accelerator() -> None:
    """Same twin (but model.device), routes and environment: the variants cannot drift apart."""
    assert set(TEMPLATES) == set(ACCELERATORS) == set(TWIN_DEVICES)
    assert set(TEMPLATES) == {p.name for p in REPO.glob("deployment*.template.json")}
    docs = {name: load_expanded(name) for name in TEMPLATES}
    for name, doc in docs.items():
        assert twin_sections(doc)["model"].pop("device") == TWIN_DEVICES[name]
    base = docs["deployment.template.json"]
    for name, doc in docs.items():
        assert twin_sections(doc) == twin_sections(base), name
        assert hub(doc) == hub(base), name
        assert module_env(doc) == module_env(base), name
        assert bind_mounts(doc) == bind_mounts(base), name


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_module_twin_validates_against_the_runtime_settings_model(template: str, tmp_path: Path) -> None:
    doc = load_mounted(template, tmp_path)
    sections = twin_sections(doc)
    assert set(sections) <= TWIN_SECTIONS
    settings = build_settings(sections)  # the twin on its own, over the defaults
    assert settings.cameras
    raw_cameras = sections["cameras"]
    assert isinstance(raw_cameras, dict), "cameras must be an object keyed by id (twins cannot patch arrays)"
    for camera in raw_cameras.values():
        assert isinstance(camera.get("rules", {}), dict) and isinstance(camera.get("rois", {}), dict)
    assert settings.model.url is not None and settings.model.sha256 is not None


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_effective_settings_of_the_module(template: str, tmp_path: Path) -> None:
    """Environment + IoT Edge + twin, as the module will run: hub on, iothub sink on `defects`, port 80,
    and the secrets read from the files the twin names."""
    doc = load_mounted(template, tmp_path)
    settings = effective_settings(doc)
    assert settings.hub_enabled
    assert settings.sinks.iothub is not None and settings.sinks.iothub.output == "defects"
    assert settings.server.port == 80
    assert all(not str(p).startswith("/") for p in (settings.events.outbox_path, settings.model.download_dir))
    assert {c.id for c in settings.cameras} == set(twin_sections(doc)["cameras"])
    for name in module_env(doc):
        assert name.startswith(ENV_PREFIX), f"{name}: the runtime reads only {ENV_PREFIX}* variables"
    assert settings.model.url is not None
    assert settings.model.url.get_secret_value() == SECRET_FILES["model-url"]
    camera = next(c for c in settings.cameras if c.id == "line1-top")
    assert camera.url == SECRET_FILES["camera-line1-url"]
    assert settings.sinks.mqtt is not None and settings.sinks.mqtt.password is not None
    assert settings.sinks.mqtt.password.get_secret_value() == SECRET_FILES["mqtt-password"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t["cameras"]["line1-top"].__setitem__("fps", -1), "fps"),
        (lambda t: t["cameras"]["line1-top"].__setitem__("colour", "red"), "colour"),
        (
            lambda t: t["cameras"]["line1-top"]["rules"]["scratch"].__setitem__("k", 9),
            "k (9) must not exceed n",
        ),
        (
            lambda t: t["cameras"]["line1-top"]["rois"]["station-b"].__setitem__("width", 0.9),
            "outside the frame",
        ),
        (lambda t: t["model"].pop("sha256"), "needs model.sha256"),
        (lambda t: t["sinks"].__setitem__("kafka", {"host": "x"}), "unknown sink"),
        (
            lambda t: t["sinks"]["mqtt"].__setitem__("password", "hunter2"),
            "give password or password_file, not both",
        ),
        (
            lambda t: t["sinks"]["mqtt"].__setitem__("password_file", "/nonexistent/mqtt-password"),
            "sinks.mqtt.password_file: cannot read /nonexistent/mqtt-password",
        ),
    ],
    ids=[
        "negative-fps",
        "unknown-camera-key",
        "k-over-n",
        "roi-outside",
        "url-without-sha256",
        "unknown-sink",
        "password-and-password-file",
        "secret-file-missing",
    ],
)
def test_broken_twin_is_rejected(mutate: Any, message: str, tmp_path: Path) -> None:
    sections = twin_sections(load_mounted("deployment.template.json", tmp_path))
    mutate(sections)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_settings(sections)


def test_broken_template_is_caught(tmp_path: Path) -> None:
    """The checks can fail: bad restartPolicy, missing schemaVersion, a route to a module that does not
    exist, an invalid route name and an output the code never uses are all reported."""
    doc = load_expanded("deployment.template.json")
    agent(doc)["modules"][MODULE]["restartPolicy"] = "sometimes"
    del hub(doc)["schemaVersion"]
    routes = hub(doc)["routes"]
    routes["bad.name"] = f"FROM /messages/modules/{MODULE}/outputs/defects INTO $upstream"
    routes["toGhost"] = (
        f'FROM /messages/modules/{MODULE}/outputs/defects INTO BrokeredEndpoint("/modules/ghost/inputs/x")'
    )
    routes["fromGhost"] = "FROM /messages/modules/ghost/outputs/out INTO $upstream"
    routes["wrongOutput"] = f"FROM /messages/modules/{MODULE}/outputs/alerts INTO $upstream"

    schema = "\n".join(schema_errors("azure-iot-edge-deployment-template-4.0.json", doc))
    assert "'sometimes' is not one of ['never', 'on-failure', 'on-unhealthy', 'always']" in schema
    assert "'schemaVersion' is a required property" in schema
    assert "bad.name" in schema
    manifest = "\n".join(
        schema_errors(
            "azure-iot-edgeagent-deployment-1.1.json",
            {"$edgeAgent": to_manifest(doc)["modulesContent"]["$edgeAgent"]},
        )
    )
    assert "sometimes" in manifest

    extra = "\n".join(route_errors(doc, code_outputs(load_mounted("deployment.template.json", tmp_path))))
    assert "route name 'bad.name'" in extra
    assert "target module 'ghost' is not in modules" in extra
    assert "source module 'ghost' is not in modules" in extra
    assert "never sends on output 'alerts'" in extra
    assert "object routes need $edgeHub schemaVersion 1.2" in extra


def test_unexpanded_placeholders_are_reported() -> None:
    text = expand('{"a": "${NOT_IN_DOTENV_XYZ}", "b": "$upstream", "c": "$alsoUnset"}', {}, {})
    assert leftover_placeholders(text) == {"${NOT_IN_DOTENV_XYZ}", "$alsoUnset"}

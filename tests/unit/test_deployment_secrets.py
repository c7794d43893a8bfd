"""Secrets in the IoT Edge deployment: the twin reads its secrets from files in a read-only host bind
mount; nothing in the twin, the module's environment, the templates or .env.template looks like a secret;
a local model comes from the read-only models mount. Each check is shown to fail on a broken deployment.

How the templates are expanded and checked: tests/deployment_files.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deployment_files import (
    DOTENV,
    MODULE,
    REPO,
    TEMPLATES,
    agent,
    create_options,
    file_references,
    is_secret_file_key,
    load_expanded,
    looks_secret,
    mount_errors,
    read_dotenv,
    read_only_host_mounts,
    secret_errors,
    twin,
    twin_sections,
    with_secret_files,
)

from edge_runtime.settings import ENV_PREFIX, build_settings

# .env names no template uses: iotedgedev's own
DOTENV_FOR_TOOLS = {"DEPLOYMENT_CONFIG_TEMPLATE_FILE", "DEFAULT_PLATFORM"}
# The twin's secret references every template carries (dotted path -> file in the secrets mount).
SECRETS_TARGET = "/run/secrets/edge-runtime"
TWIN_SECRET_FILES = {
    "model.url_file": f"{SECRETS_TARGET}/model-url",
    "cameras.line1-top.url_file": f"{SECRETS_TARGET}/camera-line1-url",
    "sinks.mqtt.password_file": f"{SECRETS_TARGET}/mqtt-password",
}
MODELS_TARGET = "/models"


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_twin_reads_its_secrets_from_files_in_a_read_only_bind_mount(template: str) -> None:
    doc = load_expanded(template)
    refs = file_references(twin_sections(doc))
    secret_refs = {name: value for name, value in refs.items() if is_secret_file_key(name.split(".")[-1])}
    assert secret_refs == TWIN_SECRET_FILES
    assert mount_errors(doc) == []
    mounts = read_only_host_mounts(doc)
    assert {SECRETS_TARGET, MODELS_TARGET} <= set(mounts)
    assert mounts[SECRETS_TARGET] != mounts[MODELS_TARGET]


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_no_secret_in_the_twin_or_the_environment(template: str) -> None:
    assert secret_errors(load_expanded(template)) == []


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_local_model_from_the_models_mount(template: str, tmp_path: Path) -> None:
    """The README's alternative to model.url_file: an export copied to the host's models folder."""
    doc = load_expanded(template)
    local = {"path": f"{MODELS_TARGET}/export.zip", "device": twin(doc)["model"]["device"]}
    twin(doc)["model"] = local
    assert mount_errors(doc) == []
    settings = build_settings(twin_sections(with_secret_files(doc, tmp_path)))
    assert settings.model.path == Path(local["path"]) and settings.model.url is None
    assert settings.model.sha256 is None  # only a download is hashed: sha256sum is the operator's check


SECRET_MUTATIONS: dict[str, tuple[Any, str]] = {
    "password-back-in-twin": (
        lambda d: twin(d)["sinks"]["mqtt"].__setitem__("password", "hunter2"),
        "twin sinks.mqtt.password: a secret value",
    ),
    "camera-login-in-twin": (
        lambda d: twin(d)["cameras"]["line1-top"].__setitem__("url", "rtsp://viewer:pw@10.0.0.21/s"),
        "twin cameras.line1-top.url: a URL with a login",
    ),
    "sas-url-in-twin": (
        lambda d: twin(d)["model"].__setitem__("url", "https://a.blob.core.windows.net/m/x.zip?sv=1&sig=abc"),
        "twin model.url: a URL with a SAS signature",
    ),
    "admin-key-in-twin": (
        lambda d: twin(d).__setitem__("server", {"admin_key": "0123456789abcdef"}),
        "twin server.admin_key: a secret value",
    ),
    "password-in-env": (
        lambda d: agent(d)["modules"][MODULE]["env"].__setitem__(
            "EDGE_RUNTIME_SINKS__MQTT__PASSWORD", {"value": "hunter2"}
        ),
        f"{MODULE} env EDGE_RUNTIME_SINKS__MQTT__PASSWORD: a secret value",
    ),
    "connection-string-in-create-options": (
        lambda d: create_options(d).__setitem__(
            "Env", ["EDGE_RUNTIME_HUB__CONNECTION_STRING=HostName=h;DeviceId=d;SharedAccessKey=abc"]
        ),
        f"{MODULE} env EDGE_RUNTIME_HUB__CONNECTION_STRING: a secret value",
    ),
}


@pytest.mark.parametrize(("mutate", "message"), SECRET_MUTATIONS.values(), ids=SECRET_MUTATIONS.keys())
def test_secret_checks_can_fail(mutate: Any, message: str) -> None:
    doc = load_expanded("deployment.template.json")
    mutate(doc)
    assert message in "\n".join(secret_errors(doc))


MOUNT_MUTATIONS: dict[str, tuple[Any, str]] = {
    "file-outside-mounts": (
        lambda d: twin(d)["sinks"]["mqtt"].__setitem__("password_file", "/etc/edge-runtime/mqtt-password"),
        "sinks.mqtt.password_file: '/etc/edge-runtime/mqtt-password' is not inside",
    ),
    "file-escapes-mount": (
        lambda d: twin(d)["model"].__setitem__("url_file", f"{SECRETS_TARGET}/../../../etc/shadow"),
        "model.url_file: '/run/secrets/edge-runtime/../../../etc/shadow' is not inside",
    ),
    "relative-file": (
        lambda d: twin(d)["model"].__setitem__("url_file", "secrets/model-url"),
        "model.url_file: 'secrets/model-url' is not inside",
    ),
    "mount-writable": (
        lambda d: create_options(d)["HostConfig"].__setitem__(
            "Binds", [b.removesuffix(":ro") for b in create_options(d)["HostConfig"]["Binds"]]
        ),
        "cameras.line1-top.url_file: '/run/secrets/edge-runtime/camera-line1-url' is not inside",
    ),
    "named-volume-not-host": (
        lambda d: create_options(d)["HostConfig"].__setitem__(
            "Binds", ["edgeRuntimeVar:/app/var", f"secrets:{SECRETS_TARGET}:ro"]
        ),
        "sinks.mqtt.password_file: '/run/secrets/edge-runtime/mqtt-password' is not inside",
    ),
    "local-model-outside-mounts": (
        lambda d: twin(d).__setitem__("model", {"path": "/app/var/export.zip"}),
        "model.path: '/app/var/export.zip' is not inside",
    ),
}


@pytest.mark.parametrize(("mutate", "message"), MOUNT_MUTATIONS.values(), ids=MOUNT_MUTATIONS.keys())
def test_mount_checks_can_fail(mutate: Any, message: str) -> None:
    doc = load_expanded("deployment.template.json")
    mutate(doc)
    assert message in "\n".join(mount_errors(doc))


def test_template_and_dotenv_keep_secrets_out_of_the_template() -> None:
    dotenv = read_dotenv(DOTENV)
    used_anywhere: set[str] = set()
    for template in TEMPLATES:
        raw = (REPO / template).read_text(encoding="utf-8")
        assert not re.search(r"://[^/\s\"$]+:[^@\s\"$]+@", raw), f"{template}: credentials in a URL"
        doc = json.loads(raw)
        # edgeAgent's registry login is the one secret the deployment must carry: from .env, never inline.
        password = agent(doc)["runtime"]["settings"]["registryCredentials"]["registry"]["password"]
        assert re.fullmatch(r"\$\{[A-Z0-9_]+\}", password), password
        assert secret_errors(doc) == [], template
        used = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", raw))
        assert used <= set(dotenv), f"{template}: no example value for {sorted(used - set(dotenv))}"
        used_anywhere |= used
    unused = set(dotenv) - used_anywhere - DOTENV_FOR_TOOLS
    assert not unused, f".env.template: {sorted(unused)} used by no template"
    for key, value in dotenv.items():
        assert not key.startswith(ENV_PREFIX), f"{key}: the runtime would read it as a setting"
        assert '"' not in value and "\\" not in value, f"{key}: pasted into JSON verbatim"
        if key != "CONTAINER_REGISTRY_PASSWORD":
            words = set(key.split("_"))
            assert (
                not words & {"PASSWORD", "SECRET", "TOKEN", "KEY", "SAS"} and "CONNECTION_STRING" not in key
            ), f"{key}: secrets are files on the device, not .env values"
            assert looks_secret(key, key.lower(), value) == [], f"{key}: {value!r} looks like a secret"

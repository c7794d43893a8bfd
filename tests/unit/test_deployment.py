"""IoT Edge deployment files: deployment templates, .env.template, module.json, Dockerfiles, .dockerignore.

The templates are expanded like iotedgedev 3.3.9 does (`.env` into the environment, `os.path.expandvars`
over the file text, then `${MODULES.<name>}` -> the built image), validated offline against the vendored
SchemaStore schemas (tests/schemas/iotedge, draft-04), then converted to the generated manifest's form
(createOptions as minified JSON strings in <= 512-character chunks) and validated against edgeAgent 1.1 and
edgeHub 1.2. What the schemas cannot say is checked here: routes name existing modules and the output the
code really uses, the module twin is valid for the runtime's own settings model, and the Dockerfiles agree
with the manifest (port, user, health check, volume path).

Secrets: the twin and the module's environment live in desired properties (readable by anyone with access
to them), so neither holds one: the twin names files (`<secret>_file`) inside a read-only host bind mount.
The settings tests create those files under tmp_path (as the operator does on the device) and point the
twin's `*_file` references there: the runtime's own reader (`resolve_secret_files`) reads them unpatched.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

import edge_runtime
from edge_runtime.config_files import SECRET_FIELDS
from edge_runtime.errors import ConfigError
from edge_runtime.settings import (
    ENV_PREFIX,
    IotHubSettings,
    Settings,
    build_settings,
    load_settings,
)

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "tests" / "schemas" / "iotedge"
MODULE = "edgeRuntime"
MODULE_DIR = REPO / "modules" / MODULE
DOTENV = REPO / ".env.template"
# template -> the module.json platform whose image ${MODULES.edgeRuntime} becomes
TEMPLATES = {
    "deployment.template.json": "amd64",
    "deployment.intelgpu.template.json": "amd64",
    "deployment.cuda.template.json": "amd64.cuda",
}
# template -> the accelerator its createOptions hand to the container (None: no device at all)
ACCELERATORS = {
    "deployment.template.json": None,
    "deployment.intelgpu.template.json": "intelgpu",
    "deployment.cuda.template.json": "cuda",
}
# template -> model.device in its twin (the only twin difference between the templates)
TWIN_DEVICES = {
    "deployment.template.json": "auto",
    "deployment.intelgpu.template.json": "openvino:GPU",
    "deployment.cuda.template.json": "cuda",
}
# .env names no template uses: iotedgedev's own
DOTENV_FOR_TOOLS = {"DEPLOYMENT_CONFIG_TEMPLATE_FILE", "DEFAULT_PLATFORM"}
# What the operator writes into the secret files on the device (file name -> first line), for the tests.
SECRET_FILES = {
    "model-url": "https://mystorage.blob.core.windows.net/models/export.zip?sv=2024-11-04&sr=b&sp=r&sig=t3st",
    "camera-line1-url": "rtsp://viewer:t3st@10.0.0.21:554/stream1",
    "mqtt-password": "t3st-password",
}
# The twin's secret references every template carries (dotted path -> file in the secrets mount).
SECRETS_TARGET = "/run/secrets/edge-runtime"
TWIN_SECRET_FILES = {
    "model.url_file": f"{SECRETS_TARGET}/model-url",
    "cameras.line1-top.url_file": f"{SECRETS_TARGET}/camera-line1-url",
    "sinks.mqtt.password_file": f"{SECRETS_TARGET}/mqtt-password",
}
MODELS_TARGET = "/models"
# What the twin may set (the rest is the module's environment); cameras/rules/rois are keyed objects.
TWIN_SECTIONS = {"model", "cameras", "sinks", "events", "log_level"}
VOLUME_TARGET = "/app/var"
TWIN_VALUE_MAX_SIZE = 512  # iotedgedev splits createOptions into createOptions, createOptions01 ... 07
TWIN_VALUE_MAX_CHUNKS = 8

ROUTE_NAME = re.compile(r"^[^\.\$# ]+$")
ROUTE_FROM_OUTPUT = re.compile(r"\bFROM\s+/messages/modules/([^/\s]+)/outputs/([^/\s]+)", re.IGNORECASE)
ROUTE_FROM_ANY = re.compile(r"\bFROM\s+(\S+)", re.IGNORECASE)
BROKERED = re.compile(r'BrokeredEndpoint\(\s*"/modules/([^/"]+)/inputs/([^/"]+)"\s*\)', re.IGNORECASE)
LEGAL_DOLLAR_WORDS = {"$upstream", "$edgeAgent", "$edgeHub", "$schema", "$version"}
URL_USERINFO = re.compile(r"\b[a-z][a-z0-9+.-]*://[^/?#@\s]+@", re.IGNORECASE)
URL_SAS = re.compile(r"[?&]sig=", re.IGNORECASE)
CONNECTION_STRING_KEY = re.compile(r"SharedAccess(Key|Signature)\b", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------ helpers
def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (python-dotenv's simple form, as iotedgedev reads .env); comments skipped."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def module_json() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODULE_DIR / "module.json").read_text(encoding="utf-8"))
    return data


def expand(text: str, dotenv: Mapping[str, str], images: Mapping[str, str]) -> str:
    """iotedgedev: os.path.expandvars over the whole text with .env loaded (unset names stay as they are),
    then `${MODULES.<name>}` -> the image built for the platform."""
    with mock.patch.dict(os.environ, dotenv):
        text = os.path.expandvars(text)
    for name, image in images.items():
        text = text.replace(f"${{MODULES.{name}}}", image)
    return text


def image_for(platform: str, dotenv: Mapping[str, str]) -> str:
    image = module_json()["image"]
    repository = expand(image["repository"], dotenv, {})
    return f"{repository}:{image['tag']['version']}-{platform}"


def leftover_placeholders(text: str) -> set[str]:
    left = set(re.findall(r"\$\{[^}]*\}", text))
    left |= {word for word in re.findall(r"\$[A-Za-z_]\w*", text) if word not in LEGAL_DOLLAR_WORDS}
    return left


def load_expanded(template: str) -> dict[str, Any]:
    dotenv = read_dotenv(DOTENV)
    text = expand(
        (REPO / template).read_text(encoding="utf-8"),
        dotenv,
        {MODULE: image_for(TEMPLATES[template], dotenv)},
    )
    assert not leftover_placeholders(text), (
        f"{template}: placeholders left: {sorted(leftover_placeholders(text))}"
    )
    doc: dict[str, Any] = json.loads(text)
    return doc


def schema_registry() -> tuple[dict[str, dict[str, Any]], Registry]:
    schemas = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(SCHEMAS.glob("*.json"))}
    registry: Registry = Registry().with_resources(
        [(s["id"], Resource.from_contents(s, default_specification=DRAFT4)) for s in schemas.values()]
    )
    return schemas, registry


def schema_errors(schema_file: str, doc: Any) -> list[str]:
    schemas, registry = schema_registry()
    validator = Draft4Validator(schemas[schema_file], registry=registry)
    return sorted(
        f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    )


def agent(doc: Mapping[str, Any]) -> dict[str, Any]:
    desired: dict[str, Any] = doc["modulesContent"]["$edgeAgent"]["properties.desired"]
    return desired


def hub(doc: Mapping[str, Any]) -> dict[str, Any]:
    desired: dict[str, Any] = doc["modulesContent"]["$edgeHub"]["properties.desired"]
    return desired


def twin(doc: Mapping[str, Any]) -> dict[str, Any]:
    desired: dict[str, Any] = doc["modulesContent"][MODULE]["properties.desired"]
    return desired


def twin_sections(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in twin(doc).items() if not k.startswith("$")}


def all_modules(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from agent(doc)["systemModules"].items()
    yield from agent(doc)["modules"].items()


def to_manifest(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The generated manifest's form: createOptions minified to a JSON string, split into 512-char chunks."""
    out = copy.deepcopy(dict(doc))
    for name, module in all_modules(out):
        settings = module["settings"]
        options = settings.get("createOptions")
        if options is None or isinstance(options, str):
            continue
        text = json.dumps(options, separators=(",", ":"))
        chunks = [text[i : i + TWIN_VALUE_MAX_SIZE] for i in range(0, len(text), TWIN_VALUE_MAX_SIZE)] or [""]
        assert len(chunks) <= TWIN_VALUE_MAX_CHUNKS, f"{name}: createOptions too long ({len(text)} chars)"
        settings["createOptions"] = chunks[0]
        for i, chunk in enumerate(chunks[1:], start=1):
            settings[f"createOptions{i:02d}"] = chunk
    return out


def create_options(doc: Mapping[str, Any], module: str = MODULE) -> dict[str, Any]:
    options: dict[str, Any] = agent(doc)["modules"][module]["settings"].get("createOptions", {})
    return options


def module_env(doc: Mapping[str, Any], module: str = MODULE) -> dict[str, str]:
    env = agent(doc)["modules"][module].get("env", {})
    return {k: str(v["value"]) for k, v in env.items()}


def effective_settings(doc: Mapping[str, Any]) -> Settings:
    """What the module runs with: its environment (plus the IoT Edge runtime's IOTEDGE_MODULEID, which
    turns the hub on) as the base, the twin's desired sections over it."""
    env = module_env(doc) | {"IOTEDGE_MODULEID": MODULE}
    return load_settings(config_file=None, overrides=twin_sections(doc), env=env)


def route_text(value: Any) -> str:
    return str(value["route"] if isinstance(value, Mapping) else value)


def route_errors(doc: Mapping[str, Any], outputs: Mapping[str, set[str]]) -> list[str]:
    """Checks the schema cannot express. outputs: module -> the output names its code really sends on."""
    errors: list[str] = []
    modules = set(agent(doc)["modules"])
    desired = hub(doc)
    routes: Mapping[str, Any] = desired.get("routes", {})
    if any(isinstance(v, Mapping) for v in routes.values()) and desired.get("schemaVersion") != "1.2":
        errors.append(f"object routes need $edgeHub schemaVersion 1.2, not {desired.get('schemaVersion')!r}")
    for name, value in routes.items():
        if not ROUTE_NAME.match(name):
            errors.append(f"route name {name!r} does not match {ROUTE_NAME.pattern}")
        text = route_text(value)
        if not ROUTE_FROM_ANY.search(text) or " INTO " not in text.upper():
            errors.append(f"route {name!r}: not FROM ... INTO ...: {text!r}")
        for module, output in ROUTE_FROM_OUTPUT.findall(text):
            if module not in modules:
                errors.append(f"route {name!r}: source module {module!r} is not in modules")
            elif module in outputs and output not in outputs[module]:
                used = sorted(outputs[module])
                errors.append(f"route {name!r}: {module} never sends on output {output!r} (uses {used})")
        for module, _input in BROKERED.findall(text):
            if module not in modules:
                errors.append(f"route {name!r}: target module {module!r} is not in modules")
    return errors


def code_outputs(doc: Mapping[str, Any]) -> dict[str, set[str]]:
    """The outputs edgeRuntime sends on: the iothub sink's output in the effective settings."""
    iothub = effective_settings(doc).sinks.iothub
    return {MODULE: {iothub.output} if iothub is not None else set()}


# --- secrets and mounts
def walk(tree: Any, where: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted path, key, value) for every key of nested objects (list items as [i])."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            name = f"{where}.{key}" if where else str(key)
            yield name, str(key), value
            yield from walk(value, name)
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            yield from walk(item, f"{where}[{i}]")


def is_secret_file_key(key: str) -> bool:
    """`<secret>_file`: the runtime reads the file's first line as <secret> when settings are built."""
    return key.endswith("_file") and key.removesuffix("_file") in SECRET_FIELDS


def file_references(sections: Mapping[str, Any]) -> dict[str, Any]:
    """Host files the twin names: every `*_file` (secrets, CAs, client keys) and a local `model.path`."""
    refs = {name: value for name, key, value in walk(sections) if key.endswith("_file") and value is not None}
    model = sections.get("model")
    if isinstance(model, Mapping) and model.get("path") is not None:
        refs["model.path"] = model["path"]
    return refs


def bind_mounts(doc: Mapping[str, Any], module: str = MODULE) -> list[tuple[str, str, set[str]]]:
    """(source, target, options) of HostConfig.Binds: `src:dst[:opt,opt]`."""
    mounts = []
    for bind in create_options(doc, module).get("HostConfig", {}).get("Binds", []):
        source, target, *rest = bind.split(":")
        mounts.append((source, target, set(rest[0].split(",")) if rest else set()))
    return mounts


def read_only_host_mounts(doc: Mapping[str, Any], module: str = MODULE) -> dict[str, str]:
    """container target -> host folder, for bind mounts of a host path (not a named volume) with `ro`."""
    return {t: s for s, t, options in bind_mounts(doc, module) if s.startswith("/") and "ro" in options}


def mounted_in(path: str, targets: Mapping[str, str]) -> str | None:
    """The read-only mount target that holds `path` (absolute, no `..`), or None."""
    pure = PurePosixPath(path)
    if not pure.is_absolute() or ".." in pure.parts or str(pure) != path:
        return None
    return next((t for t in targets if pure != PurePosixPath(t) and pure.is_relative_to(t)), None)


def mount_errors(doc: Mapping[str, Any]) -> list[str]:
    """Every file the twin names must come from a read-only host bind mount of the module."""
    targets = read_only_host_mounts(doc)
    return [
        f"{name}: {value!r} is not inside a read-only host bind mount ({sorted(targets)})"
        for name, value in file_references(twin_sections(doc)).items()
        if not isinstance(value, str) or mounted_in(value, targets) is None
    ]


def looks_secret(name: str, key: str, value: Any) -> list[str]:
    errors = []
    field = key.lower()
    if value not in (None, "") and (
        field in {"password", "connection_string"} or field.endswith("_key") or field == "key"
    ):
        errors.append(f"{name}: a secret value (name a file instead: {field}_file)")
    if isinstance(value, str):
        if URL_USERINFO.search(value):
            errors.append(f"{name}: a URL with a login (user:password@)")
        if URL_SAS.search(value):
            errors.append(f"{name}: a URL with a SAS signature (sig=)")
        if CONNECTION_STRING_KEY.search(value):
            errors.append(f"{name}: a connection string key")
    return errors


def secret_errors(doc: Mapping[str, Any]) -> list[str]:
    """Values in the twin or a module's environment (both in desired properties) that look like secrets."""
    errors = []
    for name, key, value in walk(twin_sections(doc)):
        errors += looks_secret(f"twin {name}", key, value)
    for module in agent(doc)["modules"]:
        env = dict(module_env(doc, module))
        for item in create_options(doc, module).get("Env", []):
            env_name, _, env_value = str(item).partition("=")
            env[env_name] = env_value
        for env_name, env_value in env.items():
            field = env_name.removeprefix(ENV_PREFIX).split("__")[-1]
            errors += looks_secret(f"{module} env {env_name}", field, env_value)
    return errors


def with_secret_files(doc: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """The device's side, under `root`: each read-only host mount's folder holds the secret files the twin
    names (SECRET_FILES), and the twin's `<secret>_file` paths point there (the container's view)."""
    out = copy.deepcopy(dict(doc))
    targets = read_only_host_mounts(out)

    def rewrite(tree: Any) -> None:
        items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
        for key, value in list(items):
            if isinstance(key, str) and is_secret_file_key(key) and isinstance(value, str):
                target = mounted_in(value, targets)
                if target is None:
                    continue  # mount_errors reports it; reading it fails like on the device
                file = root / target.lstrip("/") / PurePosixPath(value).relative_to(target)
                if file.name not in SECRET_FILES:
                    pytest.fail(f"{value}: add the example content of {file.name!r} to SECRET_FILES")
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_text(SECRET_FILES[file.name] + "\n", encoding="utf-8")
                tree[key] = str(file)
            else:
                rewrite(value)

    rewrite(twin(out))
    return out


def load_mounted(template: str, root: Path) -> dict[str, Any]:
    return with_secret_files(load_expanded(template), root)


# --- Dockerfiles
def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, args = current.partition(" ")
        out.append((keyword.upper(), args.strip()))
        current = ""
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def exposed_ports(instructions: list[tuple[str, str]]) -> set[str]:
    ports: set[str] = set()
    for kw, args in final_stage(instructions):
        if kw == "EXPOSE":
            ports |= {p if "/" in p else f"{p}/tcp" for p in args.split()}
    return ports


def dockerfile_errors(text: str, context: Path) -> list[str]:
    errors: list[str] = []
    instructions = dockerfile_instructions(text)
    froms = [args for kw, args in instructions if kw == "FROM"]
    if len(froms) < 2:
        errors.append("not multi-stage (build in a builder stage, copy the venv into the final one)")
    final = final_stage(instructions)
    users = [args for kw, args in final if kw == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        errors.append("the final stage does not switch to a non-root USER")
    health = [args for kw, args in final if kw == "HEALTHCHECK"]
    if not health or "/health/live" not in health[-1] or "NONE" in health[-1].split():
        errors.append("no HEALTHCHECK on /health/live")
    if "80/tcp" not in exposed_ports(instructions):
        errors.append("no EXPOSE 80")
    entry = [args for kw, args in final if kw == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1]) != ["python", "-m", "edge_runtime", "serve"]:
        errors.append('ENTRYPOINT is not ["python", "-m", "edge_runtime", "serve"]')
    if not any(kw == "ENV" and "PYTHONUNBUFFERED=1" in args for kw, args in final):
        errors.append("PYTHONUNBUFFERED=1 not set")
    for kw, args in instructions:
        if kw != "RUN":
            continue
        if "apt-get install" in args:
            if "--no-install-recommends" not in args:
                errors.append(f"apt-get install without --no-install-recommends: {args[:80]!r}")
            if "rm -rf /var/lib/apt/lists/*" not in args:
                errors.append(
                    f"apt-get install without rm -rf /var/lib/apt/lists/* in the same RUN: {args[:80]!r}"
                )
        if re.search(r"\bpip install\b", args) and "--no-cache-dir" not in args:
            errors.append(f"pip install without --no-cache-dir: {args[:80]!r}")
    for kw, args in final:
        if kw == "RUN" and re.search(r"\b(build-essential|gcc|g\+\+|python3-dev)\b", args):
            errors.append(f"compiler in the final stage: {args[:80]!r}")
    for kw, args in instructions:
        if kw in {"COPY", "ADD"} and "--from=" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            for source in parts[:-1]:
                if not (context / source).exists():
                    errors.append(f"{kw} source {source!r} is not in the build context {context}")
    workdirs = [args for kw, args in final if kw == "WORKDIR"]
    if not workdirs or workdirs[-1] != str(Path(VOLUME_TARGET).parent):
        errors.append(f"WORKDIR is not {Path(VOLUME_TARGET).parent} (the runtime writes relative var/)")
    if not any(kw == "RUN" and VOLUME_TARGET in args and "chown" in args for kw, args in final):
        errors.append(f"{VOLUME_TARGET} is not created and chowned to the runtime user in the image")
    return errors


def build_context() -> Path:
    context: str = module_json()["image"]["contextPath"]
    return (MODULE_DIR / context).resolve()


def platforms() -> dict[str, str]:
    result: dict[str, str] = module_json()["image"]["tag"]["platforms"]
    return result


# ---------------------------------------------------------------------------------------------- templates
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


# ------------------------------------------------------------------------------------------------ secrets
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


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_create_options_agree_with_the_image(template: str) -> None:
    doc = load_expanded(template)
    options = create_options(doc)
    host = options["HostConfig"]
    dockerfile = MODULE_DIR / platforms()[TEMPLATES[template]].removeprefix("./")
    exposed = exposed_ports(dockerfile_instructions(dockerfile.read_text(encoding="utf-8")))
    assert set(options["ExposedPorts"]) == exposed == {"80/tcp"}
    assert set(host["PortBindings"]) <= exposed
    assert all(b["HostPort"].isdigit() for bindings in host["PortBindings"].values() for b in bindings)
    # A NAMED volume (no leading /) at /app/var: Docker copies the image's owner of /app/var into it.
    volumes = [b.split(":") for b in host["Binds"]]
    assert [(s, t) for s, t, *_ in volumes if t == VOLUME_TARGET and not s.startswith("/")], volumes
    assert host["Sysctls"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    accelerator = ACCELERATORS[template]
    if accelerator == "cuda":
        assert TEMPLATES[template] == "amd64.cuda"
        assert host["DeviceRequests"] == [{"Count": -1, "Capabilities": [["gpu"]]}]
    else:
        assert "DeviceRequests" not in host
    if accelerator == "intelgpu":
        assert TEMPLATES[template] == "amd64", "the amd64 image has OpenVINO's GPU plugin and OpenCL"
        assert host["Devices"] == [
            {"PathOnHost": "/dev/dri", "PathInContainer": "/dev/dri", "CgroupPermissions": "rwm"}
        ]
        assert host["GroupAdd"] and all(g.isdigit() for g in host["GroupAdd"]), (
            "GroupAdd: the host's numeric render gid"
        )
    else:
        # A device that is missing on the host keeps the container from starting: none by default.
        assert "Devices" not in host and "GroupAdd" not in host


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


# ------------------------------------------------------------------------------------ module.json / images
def test_module_json() -> None:
    data = module_json()
    assert data["$schema-version"] == "0.0.1"
    image = data["image"]
    assert image["repository"] == "${CONTAINER_REGISTRY_SERVER}/edge-runtime"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert image["tag"]["version"] == pyproject["project"]["version"] == edge_runtime.__version__
    assert set(platforms()) == {"amd64", "arm64v8", "amd64.cuda"}
    context = build_context()
    assert (context / "pyproject.toml").is_file() and (context / "edge_runtime" / "__init__.py").is_file()
    ignore = (context / ".dockerignore").read_text(encoding="utf-8").split()
    assert ignore[ignore.index("*") :].count("*") == 1, (
        "allow-list .dockerignore starts by excluding everything"
    )
    for needed in (
        "pyproject.toml",
        "README.md",
        "edge_runtime/",
    ):  # README: pyproject's readme, read by the build
        assert f"!{needed}" in ignore, f".dockerignore drops {needed}"


@pytest.mark.parametrize("platform", ["amd64", "arm64v8", "amd64.cuda"])
def test_dockerfile(platform: str) -> None:
    dockerfile = MODULE_DIR / platforms()[platform].removeprefix("./")
    assert dockerfile.is_file()
    text = dockerfile.read_text(encoding="utf-8")
    assert dockerfile_errors(text, build_context()) == []
    base = [args for kw, args in dockerfile_instructions(text) if kw == "ARG" and "IMAGE=" in args]
    expected = {
        "amd64": "python:3.11-slim-bookworm",
        "arm64v8": "arm64v8/python:3.11-slim-bookworm",
        "amd64.cuda": "cudnn-runtime-ubuntu24.04",
    }[platform]
    assert any(expected in arg for arg in base), base


def test_dockerfile_checks_can_fail() -> None:
    bad = (
        "FROM python:3.11-slim-bookworm\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "RUN pip install .\n"
        "COPY nonexistent_dir ./x\n"
        "USER root\n"
        'ENTRYPOINT ["python", "app.py"]\n'
    )
    errors = "\n".join(dockerfile_errors(bad, build_context()))
    for expected in (
        "not multi-stage",
        "non-root USER",
        "HEALTHCHECK",
        "EXPOSE 80",
        "ENTRYPOINT",
        "PYTHONUNBUFFERED",
        "--no-install-recommends",
        "rm -rf /var/lib/apt/lists/*",
        "--no-cache-dir",
        "compiler in the final stage",
        "'nonexistent_dir'",
        "WORKDIR",
        "chowned",
    ):
        assert expected in errors, expected

"""The IoT Edge deployment files as the deployment tests read and check them: deployment templates,
.env.template, module.json and the module's Dockerfiles.

The templates are expanded like iotedgedev 3.3.9 does (`.env` into the environment, `os.path.expandvars`
over the file text, then `${MODULES.<name>}` -> the built image), validated offline against the vendored
SchemaStore schemas (tests/schemas/iotedge, draft-04), then converted to the generated manifest's form
(createOptions as minified JSON strings in <= 512-character chunks) for edgeAgent 1.1 and edgeHub 1.2.
What the schemas cannot say is checked here: routes name existing modules and the output the code really
uses (`route_errors`), files the twin names lie in read-only host bind mounts (`mount_errors`), nothing in
the twin or the environment looks like a secret (`secret_errors`), and the Dockerfiles follow the image's
rules (`dockerfile_errors`).

Secrets: the twin and the module's environment live in desired properties (readable by anyone with access
to them), so neither holds one: the twin names files (`<secret>_file`) inside a read-only host bind mount.
`with_secret_files` creates those files under a test's tmp_path (as the operator does on the device) and
points the twin's `*_file` references there: the runtime's own reader (`resolve_secret_files`) reads them
unpatched.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from unittest import mock

import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from edge_runtime.config_files import SECRET_FIELDS
from edge_runtime.settings import ENV_PREFIX, Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
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
# What the operator writes into the secret files on the device (file name -> first line), for the tests.
SECRET_FILES = {
    "model-url": "https://mystorage.blob.core.windows.net/models/export.zip?sv=2024-11-04&sr=b&sp=r&sig=t3st",
    "camera-line1-url": "rtsp://viewer:t3st@10.0.0.21:554/stream1",
    "mqtt-password": "t3st-password",
}
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


# ------------------------------------------------------------------------ templates, manifests and routes
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

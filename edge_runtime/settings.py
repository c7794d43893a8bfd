"""The only reader of configuration: YAML file < environment < command line -> one frozen Settings tree.

Environment variables: `EDGE_RUNTIME_<SECTION>__<FIELD>`, e.g. `EDGE_RUNTIME_SERVER__PORT=8080`,
`EDGE_RUNTIME_MODEL__PATH=/models/export.zip`; `EDGE_RUNTIME_CONFIG` names the YAML file.
Lists may be given as JSON (`EDGE_RUNTIME_URL_FETCH__ALLOW='["10.0.0.0/8"]'`) or comma-separated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from edge_runtime.errors import ConfigError
from edge_runtime.model.spec import Resize

ENV_PREFIX = "EDGE_RUNTIME_"
CONFIG_ENV = "EDGE_RUNTIME_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Section):
    path: Path | None = Field(None, description="export folder or .zip; none = the built-in demo model")
    device: str = Field("auto", description="auto | cpu | cuda | openvino[:CPU|GPU|NPU|AUTO]")
    allow_fallback: bool = Field(
        False, description="use the auto choice when the requested device is missing"
    )
    threads: int = Field(0, ge=0, description="backend threads per inference; 0 = 1 per worker when serving")
    resize: Resize | None = Field(None, description="override the preprocessing recipe")
    verify_sha1: bool = Field(True, description="check ModelFileSHA1 from cvexport.manifest")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        from edge_runtime.backends.providers import parse_device

        parse_device(value)  # raises ConfigError with the accepted forms
        return value


class ServerSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(80, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="413 above this (the container's 4 MiB)")
    max_image_pixels: int = Field(50_000_000, gt=0, description="400 above this many pixels (bombs)")
    inference_workers: int = Field(0, ge=0, description="inference threads; 0 = one per CPU core")
    max_inflight: int = Field(0, ge=0, description="requests admitted at once; 0 = 4 per worker; 503 above")
    prediction_key: SecretStr | None = Field(None, description="require this Prediction-Key header")
    protect_health: bool = False
    protect_metrics: bool = False
    shutdown_timeout_s: float = Field(5.0, gt=0)
    response_id: str = ""
    response_project: str = ""
    response_iteration: str = ""


class UrlFetchSettings(_Section):
    allow: tuple[str, ...] = Field((), description="hosts or CIDRs /url may reach even if private/loopback")
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    max_redirects: int = Field(3, ge=0)

    @field_validator("allow", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _as_list(value)


class Settings(_Section):
    model: ModelSettings = ModelSettings()
    server: ServerSettings = ServerSettings()
    url_fetch: UrlFetchSettings = UrlFetchSettings()
    log_level: str = "INFO"


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return data


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def build_settings(data: Mapping[str, Any]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {describe_validation_error(exc)}") from exc
    except ConfigError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < YAML file < environment < overrides (the command line)."""
    env = os.environ if env is None else env
    file_name = config_file or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)
    data: dict[str, Any] = _from_file(file_name) if file_name else {}
    data = _merge(data, _from_env(env))
    data = _merge(data, overrides or {})
    return build_settings(data)

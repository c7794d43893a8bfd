"""What people write beside the settings model: YAML config files and secrets kept in files.

A config file is read strictly (a duplicate key is an error naming both lines: PyYAML would keep the last
one silently) and the paths in it are taken relative to its folder. Any setting that holds a secret may
instead name a file holding it (`password_file: /run/secrets/mqtt`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.errors import ConfigError

# Settings that hold secrets may instead name a file that holds them (`password_file: /run/secrets/mqtt`):
# desired properties and a deployment's env are readable by anyone with access to them, a file on a
# host bind mount is not. The file is read every time settings are built (a rotated secret applies).
SECRET_FIELDS = ("password", "url", "connection_string", "prediction_key", "admin_key")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently: a second `model:` would replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: the keys written here override the merged ones
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # SafeLoader names the unhashable key itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} on line {line} (first on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML settings file as a tree: duplicate keys refused, paths made relative to its folder."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    resolved: dict[str, Any] = _paths_from(data, path.resolve().parent)
    return resolved


# Settings naming files or folders. In a config file they are relative to the file's folder (like
# docker-compose, like any config a person writes beside their model), not to where `serve` runs.
PATH_KEYS = frozenset(
    {"path", "download_dir", "download_ca_file", "jsonl_path", "snapshot_dir", "outbox_path", "history_path"}
    | {"pki_dir"}  # the OPC UA server's certificates
    | {"ca_file", "cert_file", "key_file"}
    | {f"{name}_file" for name in SECRET_FIELDS}
)


def _paths_from(tree: Any, base: Path, key: str = "") -> Any:
    if isinstance(tree, dict):
        return {k: _paths_from(v, base, str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_paths_from(item, base, key) for item in tree]
    is_path = key in PATH_KEYS or (key == "url" and isinstance(tree, str) and "://" not in tree)
    if is_path and isinstance(tree, str) and tree and not Path(tree).expanduser().is_absolute():
        return str(base / tree)
    return tree


def resolve_secret_files(data: Any, where: str = "") -> Any:
    """`<field>_file: path` -> `<field>: <the file's first line>`, anywhere in the tree."""
    if isinstance(data, list):
        return [resolve_secret_files(item, f"{where}[{i}]") for i, item in enumerate(data)]
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        field = str(key).removesuffix("_file")
        if str(key).endswith("_file") and field in SECRET_FIELDS:
            if value is None:
                continue
            if data.get(field) is not None:
                raise ConfigError(f"{name}: give {field} or {key}, not both")
            out[field] = _read_secret(name, value, url=field == "url")
        elif key in SECRET_FIELDS and value is None and data.get(f"{key}_file") is not None:
            continue  # a null beside its file (a twin clearing the inline value) must not hide the file's
        else:
            out[key] = resolve_secret_files(value, name)
    return out


def _read_secret(name: str, path: Any, url: bool = False) -> str:
    """The file's first line. A `url` must look like one: camera URLs are shown (redacted) in status, so
    any other first line of any file would be shown as it is."""
    try:
        lines = Path(str(path)).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{name}: cannot read {path}: {reason}") from exc
    if not lines or not lines[0].strip():
        raise ConfigError(f"{name}: {path} is empty")
    value = lines[0].strip()
    if url and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", value):
        raise ConfigError(f"{name}: the first line of {path} is not a URL (scheme://...)")
    return value

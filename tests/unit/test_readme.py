"""Every YAML example in the README loads as pasted: valid YAML, no duplicate keys, valid settings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.settings import load_settings

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a pasted example must not lose a section."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {key for key in keys if keys.count(key) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def test_the_readme_has_yaml_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("block", BLOCKS, ids=[b.split(":")[0].strip() for b in BLOCKS])
def test_every_yaml_example_loads_as_a_config_file(block: str, tmp_path: Path) -> None:
    assert isinstance(yaml.load(block, Loader=_StrictLoader), dict)
    config = tmp_path / "config.yaml"
    config.write_text(block)
    # As in a module (the sinks example has the iothub sink, which needs the hub IoT Edge provides).
    load_settings(config, env={"IOTEDGE_MODULEID": "edgeRuntime"})

"""The edgeRuntime module's image: module.json (version, platforms, build context, allow-list
.dockerignore), the Dockerfiles (multi-stage, non-root, health check, port 80, /app/var) and the
templates' createOptions agreeing with the image (ports, volume, accelerator devices).

How the Dockerfiles are read and checked: tests/deployment_files.py.
"""

from __future__ import annotations

import tomllib

import pytest
from deployment_files import (
    ACCELERATORS,
    MODULE_DIR,
    REPO,
    TEMPLATES,
    VOLUME_TARGET,
    build_context,
    create_options,
    dockerfile_errors,
    dockerfile_instructions,
    exposed_ports,
    load_expanded,
    module_json,
    platforms,
)

import edge_runtime


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_create_options_agree_with_the_image(template: str) -> None:
    doc = load_expanded(template)
    options = create_options(doc)
    host = options["HostConfig"]
    dockerfile = MODULE_DIR / platforms()[TEMPLATES[template]].removeprefix("./")
    exposed = exposed_ports(dockerfile_instructions(dockerfile.read_text(encoding="utf-8")))
    # the HTTP API; OPC UA (listening only when opcua.enabled)
    assert set(options["ExposedPorts"]) == exposed == {"80/tcp", "4840/tcp"}
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

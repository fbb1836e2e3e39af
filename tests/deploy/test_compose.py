"""The compose file in ``deploy/compose``: a start order that works, commands the CLI accepts.

No Docker engine runs on the test machines (only the client), so the images
are not built here; what can be checked without one is: the node and the
workers start only once the schema is upgraded and the broker answers, the
upgrade only once PostgreSQL answers, every service's command is one the
``ainode`` CLI accepts with the compose file's environment (parsed into the
node's settings), and the image pins the torch the Makefile pins.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
#: ``${NAME:-default}`` in a compose value.
_DEFAULTED = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def services() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())["services"]


def node_services() -> list[str]:
    """The services built from the node's image."""
    return sorted(name for name, service in services().items() if "build" in service)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose sets it when no variable is given."""
    return {key: _DEFAULTED.sub(r"\1", str(value)) for key, value in service["environment"].items()}


def dockerfile() -> str:
    return (COMPOSE / "Dockerfile").read_text()


def test_the_node_and_the_workers_start_after_the_schema_upgrade_and_the_broker() -> None:
    compose = services()
    assert node_services() == ["migrate", "node", "web", "worker"]
    assert compose["migrate"]["command"] == ["db", "upgrade"]
    assert compose["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("node", "worker"):
        assert compose[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    for name in ("postgres", "redis"):
        assert "healthcheck" in compose[name]
    # the node and its workers share the spool: workers read what the node received
    assert compose["node"]["volumes"] == compose["worker"]["volumes"]


@pytest.mark.parametrize("name", node_services())
def test_the_command_of_each_service_is_one_the_cli_accepts(name: str, tmp_path: Path) -> None:
    service = services()[name]
    assert re.search(r'^ENTRYPOINT \["ainode"\]$', dockerfile(), re.MULTILINE)
    env = {**environment(service), "PATH": "/usr/bin:/bin"}
    env["AINODE_SPOOL_DIR"] = str(tmp_path / "spool")  # the image's /var/lib/ainode
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ainode"), *service["command"], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_the_image_installs_the_torch_the_makefile_pins() -> None:
    pinned = re.findall(r"torch==([0-9.]+)", (REPO / "Makefile").read_text())
    assert pinned
    assert set(re.findall(r"torch==([0-9.]+)", dockerfile())) == set(pinned)

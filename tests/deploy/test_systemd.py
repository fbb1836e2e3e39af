"""The systemd units in ``deploy/systemd``: valid units whose commands the ``ainode`` CLI accepts.

systemd does not run in a test, but ``systemd-analyze verify`` checks a unit as
systemd would load it (sections, directives, specifiers, executables), and each
command line of a unit is run with ``--help``: the CLI parses it through the
node's settings from the example site configuration.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
#: Where the units expect the node's virtual environment and its configuration.
INSTALLED_COMMAND = "/opt/ainode/.venv/bin/ainode"
INSTALLED_CONFIG = "/etc/ainode/node.toml"
EXAMPLE_CONFIG = REPO / "deploy" / "node.example.toml"


def ainode_command() -> Path:
    """The ``ainode`` console script of the environment running the tests."""
    return Path(sys.executable).parent / "ainode"


def unit_files() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def installed_copy(unit: Path, folder: Path) -> Path:
    """``unit`` as installed on this machine: this checkout's command and example configuration.

    A template unit is named with an instance (``ainode-worker@cpu.service``).
    """
    text = unit.read_text().replace(INSTALLED_COMMAND, str(ainode_command()))
    text = text.replace(INSTALLED_CONFIG, str(EXAMPLE_CONFIG))
    name = unit.name.replace("@.service", "@cpu.service")
    copy = folder / name
    copy.write_text(text)
    return copy


def command_lines(unit: Path) -> list[list[str]]:
    """The argv of every ``ExecStart``/``ExecStartPre`` line of ``unit``."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    service = parser["Service"]
    return [shlex.split(service[key]) for key in ("ExecStartPre", "ExecStart") if key in service]


def test_there_is_a_unit_for_the_node_its_workers_and_its_console() -> None:
    assert [unit.name for unit in unit_files()] == [
        "ainode-serve.service",
        "ainode-web.service",
        "ainode-worker@.service",
    ]


@pytest.mark.parametrize("unit", unit_files(), ids=lambda unit: unit.name)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze (package systemd) is needed"
    copy = installed_copy(unit, tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in result.stderr.splitlines() if copy.name in line]
    assert result.returncode == 0 and not complaints, result.stderr


@pytest.mark.parametrize("unit", unit_files(), ids=lambda unit: unit.name)
def test_every_command_of_the_unit_is_one_the_cli_accepts(unit: Path, tmp_path: Path) -> None:
    commands = command_lines(installed_copy(unit, tmp_path))
    assert commands, "the unit starts nothing"
    for argv in commands:
        assert argv[0] == str(ainode_command())
        result = subprocess.run(
            [*argv, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "AINODE_SPOOL_DIR": str(tmp_path / "spool")},
        )
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout

"""The reference deployment in deploy/: systemd accepts its units, the CLI accepts their
command lines, and the control plane accepts the example settings."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import typer

from edgepcap.cli.app import app
from edgepcap.control.settings import Settings
from tests.support.processes import EDGEPCAP

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
INSTALLED = "/opt/edgepcap/.venv/bin/edgepcap"
UNITS = {"edgepcap-api.service": "api.env.example", "edgepcap-agent.service": "agent.env.example"}


def env_file(name: str) -> dict[str, str]:
    lines = (DEPLOY / name).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def exec_start(unit: str, env: dict[str, str]) -> list[str]:
    """The unit's ExecStart as systemd runs it: ${VAR} from its environment file, %l the
    host's short name."""
    [line] = [x for x in (DEPLOY / unit).read_text().splitlines() if x.startswith("ExecStart=")]
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line.removeprefix("ExecStart="))
    return shlex.split(command.replace("%l", "ord01"))


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_accepts_the_unit(unit, tmp_path):
    # The installed path does not exist here: verify the unit with this checkout's command.
    text = (DEPLOY / unit).read_text().replace(INSTALLED, EDGEPCAP)
    (tmp_path / unit).write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert unit.removesuffix(".service") not in out.stderr, out.stderr


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_the_cli_accepts_the_units_command_line(unit, monkeypatch):
    env = env_file(UNITS[unit])
    for name, value in env.items():  # what the EnvironmentFile gives the process
        monkeypatch.setenv(name, value)
    argv = exec_start(unit, env)
    assert argv[0] == INSTALLED
    group = typer.main.get_command(app)
    sub = group.get_command(click.Context(group), argv[1])
    assert sub is not None, argv[1]
    # Parsing only: an unknown option, a missing required one or a bad value raises here.
    with sub.make_context(argv[1], argv[2:]) as ctx:
        if argv[1] == "agent":
            assert ctx.params["colo"] == env["EDGEPCAP_COLO"]
            assert ctx.params["machine"] == "ord01"
            assert ctx.params["agent_key"] == env["EDGEPCAP_AGENT_KEY"]
        else:
            assert ctx.params["workers"] == 2 and ctx.params["tls_cert"]


def test_the_control_plane_accepts_the_example_settings(tmp_path):
    env = env_file("api.env.example")
    settings = Settings.from_environ(data_dir=tmp_path, environ=env)
    assert settings.database == env["EDGEPCAP_DATABASE"]
    assert settings.sample_store == env["EDGEPCAP_SAMPLE_STORE"]
    assert settings.relay_host == env["EDGEPCAP_RELAY_HOST"]

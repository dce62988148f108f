"""The lab on PostgreSQL with a password in its URL: the password, the agent key and the
metrics token are on no process's command line, and the lab's files are root's alone."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.support.lab import running_lab

pytestmark = pytest.mark.root  # running_lab: namespaces, nftables

PASSWORD = "db-password-not-for-ps"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_lab_keeps_secrets_off_command_lines_and_its_files_private(
    postgres, tmp_path_factory, s3_server
):
    # Trust authentication ignores the password; it stands for a real one here.
    url = postgres.new_database().replace("postgres@", f"postgres:{PASSWORD}@", 1)
    data_dir = tmp_path_factory.mktemp("private") / "new-lab"
    # `lab up --database URL` is short-lived; the api it starts runs on and on.
    with running_lab(data_dir, s3_server, url) as lab:
        assert lab.info["database"] == url  # the lab did run on it
        state = json.loads((data_dir / "lab-state.json").read_text())
        secrets = [PASSWORD, *state["agent_keys"].values(), lab.info["metrics_token"]]
        for pid in state["pids"]:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert not [s for s in secrets if s.encode() in cmdline], cmdline
        # The agents have no business with the database, not even its URL.
        for pid in state["pids"][1:]:
            assert PASSWORD.encode() not in Path(f"/proc/{pid}/environ").read_bytes()

        assert mode(data_dir) == 0o700
        for name in ("lab.json", "lab-state.json", "metrics-token"):
            assert mode(data_dir / name) == 0o600, name

        # Customers' sampled packets, as the api stored them.
        lab.send(2000)  # sampled 1 in 100
        lab.samples_settled()
        segments = list((data_dir / "samples").rglob("*.seg"))
        assert segments
        for path in segments:
            assert mode(path) == 0o600, path
            assert mode(path.parent) == 0o700, path.parent

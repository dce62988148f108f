"""The data dir and what is in it are the service's alone, from creation; secrets given
to the servers stay out of their command lines."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import httpx

from tests.support.processes import EDGEPCAP, free_port, wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [EDGEPCAP, *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serving(proc: subprocess.Popen, url: str, log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()}")
        return httpx.get(f"{url}/client/v4/health", timeout=1).status_code == 200

    wait_for(ready, 30, "the api to answer")


def assert_private(data_dir: Path, names: list[str]) -> None:
    assert mode(data_dir) == 0o700
    for name in names:
        assert mode(data_dir / name) == 0o600, name


def test_api_creates_a_missing_data_dir_for_its_owner_only(tmp_path):
    data_dir = tmp_path / "new" / "data"
    port = free_port()
    log = tmp_path / "api.log"
    proc = start(["api", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)], log)
    try:
        serving(proc, f"http://127.0.0.1:{port}", log)
        wait_for((data_dir / "supervisor.lock").exists, 10, "the supervisor to take its lock")
        # SQLite keeps its -wal and -shm files while the api has the database open.
        assert_private(
            data_dir, ["edgepcap.db", "edgepcap.db-wal", "edgepcap.db-shm", "supervisor.lock"]
        )
        assert mode(data_dir / "samples") == 0o700
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text()


def test_an_admin_command_creates_the_database_for_its_owner_only(tmp_path):
    data_dir = tmp_path / "admin"
    out = subprocess.run(
        [
            EDGEPCAP,
            "accounts",
            "create",
            "a",
            "--prefix",
            "192.0.2.0/24",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EDGEPCAP_DATABASE": ""},
    )
    assert out.returncode == 0, out.stderr
    assert_private(data_dir, ["edgepcap.db"])


def test_up_keeps_its_data_dir_private_and_its_secrets_in_files(tmp_path):
    data_dir = tmp_path / "up"
    port = free_port()
    log = tmp_path / "up.log"
    proc = start(
        ["up", "--no-agent", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)], log
    )
    try:
        serving(proc, f"http://127.0.0.1:{port}", log)
        # --no-agent: no agent key (test_cli.py checks up's key file with its agent)
        secrets_made = ["demo-account.json", "metrics-token"]
        assert_private(data_dir, ["edgepcap.db", "edgepcap.db-wal", *secrets_made])
        token = (data_dir / "metrics-token").read_text().strip()
        r = httpx.get(
            f"http://127.0.0.1:{port}/metrics",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert r.status_code == 200 and "edgepcap_machine_up" in r.text
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 401
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        for name in secrets_made:
            value = (data_dir / name).read_text().strip()
            secret = json.loads(value)["api_token"] if name.endswith(".json") else value
            assert secret.encode() not in cmdline
    finally:
        stop(proc)


def test_a_data_dir_open_to_others_is_reported(tmp_path):
    data_dir = tmp_path / "loose"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    out = subprocess.run(
        [EDGEPCAP, "accounts", "list", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "EDGEPCAP_DATABASE": ""},
    )
    assert out.returncode == 0, out.stderr
    assert f"the data dir {data_dir} is open to other users (mode 755): chmod 700 it" in out.stderr

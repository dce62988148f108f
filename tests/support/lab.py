"""A running `edgepcap lab` (two machines of ORD, or of each colo asked for) and helpers
to drive it as a customer would.

The lab needs root: network namespaces, nftables.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgepcap.client import Client, Settings
from tests.support.processes import EDGEPCAP, free_port, wait_for
from tests.support.servers import S3_ENV


@dataclass
class Lab:
    """A running `edgepcap lab`: its lab.json, and helpers to drive it as a customer would."""

    data_dir: Path
    info: dict[str, Any]
    s3: str = ""

    def __getitem__(self, key: str) -> Any:
        return self.info[key]

    def client(self, tenant: str = "customer") -> httpx.Client:
        t = self.info if tenant == "customer" else self.info["other"]
        return httpx.Client(
            base_url=f"{t['api']}/client/v4/accounts/{t['account_id']}",
            headers={"Authorization": f"Bearer {t['api_token']}"},
            timeout=30,
        )

    def traffic(self, *args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [EDGEPCAP, "lab", "traffic", "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["flows"]

    def start_full(self, tenant: str = "customer", **fields: Any) -> dict[str, Any]:
        t = self.info if tenant == "customer" else self.info["other"]
        body = {
            "system": "magic-transit",
            "type": "full",
            "time_limit": 60,
            "colo_name": t["colo"],
            "destination_conf": t["destination_conf"],
            **fields,
        }
        with self.client(tenant) as c:
            r = c.post("/pcaps", json=body)
            assert r.status_code == 200, r.text
            pcap = r.json()["result"]
            # Traffic may only start once every machine captures.
            wait_for(
                lambda: self.get(pcap["id"], tenant)["status"] != "pending",
                5,
                "the capture to start",
            )
            return self.get(pcap["id"], tenant)

    def validate(self, conf: str, read_challenge: Callable[[str], str]) -> str:
        """Prove ownership of the bucket `conf` as a customer would: ask for a challenge,
        read it back from the bucket (`read_challenge(filename)`), validate; returns conf."""
        t = self.info
        settings = Settings(f"{t['api']}/client/v4", t["account_id"], t["api_token"])
        with Client(settings) as c:
            bucket = c.prove_bucket(conf, read_challenge)
        assert bucket["status"] == "success", bucket
        return conf

    def get(self, pcap_id: str, tenant: str = "customer") -> dict[str, Any]:
        with self.client(tenant) as c:
            return c.get(f"/pcaps/{pcap_id}").json()["result"]

    def wait_end(self, pcap_id: str, timeout: float = 30, tenant: str = "customer"):
        return wait_for(
            lambda: (p := self.get(pcap_id, tenant))["status"] in ("success", "failed") and p,
            timeout,
            f"capture {pcap_id} to end",
        )

    def files(self, pcap_id: str, tenant: str = "customer") -> dict[str, Path]:
        t = self.info if tenant == "customer" else self.info["other"]
        root = Path(t["destination_conf"].removeprefix("file://"))
        return {p.parent.name: p for p in root.glob(f"*/pcap_{pcap_id}.pcap")}

    def sample(self, tenant: str = "customer", **fields: Any) -> dict[str, Any]:
        body = {
            "system": "magic-transit",
            "type": "simple",
            "time_limit": 300,
            "packet_limit": 10000,
            **fields,
        }
        with self.client(tenant) as c:
            r = c.post("/pcaps", json=body)
            assert r.status_code == 200, r.text
            return r.json()["result"]

    def download(self, pcap_id: str, path: Path, tenant: str = "customer") -> Path:
        with self.client(tenant) as c:
            r = c.get(f"/pcaps/{pcap_id}/download")
            assert r.status_code == 200, r.text
            path.write_bytes(r.content)
        return path

    def metrics(self) -> str:
        """`/metrics`, with the operator token the lab made."""
        token = self.info["metrics_token"]
        r = httpx.get(
            f"{self.info['api']}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert r.status_code == 200, r.text
        return r.text

    def sampler_stats(self) -> dict[str, dict[str, int]]:
        text = self.metrics()
        out: dict[str, dict[str, int]] = {}
        for line in text.splitlines():
            if line.startswith("edgepcap_sampler_"):
                name, value = line.rsplit(" ", 1)
                key = name.split("{")[0].removeprefix("edgepcap_sampler_").removesuffix("_total")
                machine = name.split('machine="')[1].split('"')[0]
                out.setdefault(machine, {})[key] = int(value)
        return out

    def samples_settled(self) -> dict[str, dict[str, int]]:
        """Wait until every sampler has shipped everything it took and is quiet."""
        last: list[Any] = [None]

        def settled() -> Any:
            stats = self.sampler_stats()
            quiet = all(
                s.get("backlog", 1) == 0 and s["shipped"] == s["attributed"] for s in stats.values()
            )
            same = stats == last[0]
            last[0] = stats
            return quiet and same and stats

        return wait_for(settled, 20, "the samplers to ship everything", interval=1.2)

    def send(
        self,
        count: int,
        tenants: tuple[str, ...] = ("customer",),
        size: int = 100,
        v6: bool = False,
        protos: tuple[str, ...] = ("udp",),
        rate: float | None = None,
        seconds: float = 30.0,
        hosts: int | None = None,
    ) -> list[dict[str, Any]]:
        """`lab traffic` from this process (no process start): flows as `traffic` gives them."""
        from edgepcap.lab import traffic
        from edgepcap.lab.topology import Layout

        state = json.loads((self.data_dir / "lab-state.json").read_text())
        layout = Layout.from_state(state)
        flows = traffic.send(layout, list(tenants), count, size, v6, protos, seconds, rate, hosts)
        return [f.as_dict() for f in flows]

    def machines_up(self) -> dict[str, bool]:
        """Which machines the control plane sees live (`edgepcap_machine_up`)."""
        text = self.metrics()
        return {
            line.split('machine="')[1].split('"')[0]: line.endswith(" 1")
            for line in text.splitlines()
            if line.startswith("edgepcap_machine_up{")
        }

    def registrations(self, machine: str) -> int:
        """How often the machine's agent has registered (from its log)."""
        log = self.data_dir / "logs" / f"{machine}.log"
        return log.read_text(errors="replace").count(f"registered {machine} in ")

    def tables(self, machine: str) -> list[str]:
        """The capture tables (`edgepcap_<id>`) in a machine; the sampler's is always there."""
        ns = self.info["namespaces"]["machines"][machine]
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "list", "tables"],
            capture_output=True,
            text=True,
            check=True,
        )
        # A capture has a table per IP family, both of its name: listed once.
        names = dict.fromkeys(line.split()[-1] for line in out.stdout.splitlines())
        return [n for n in names if n.startswith("edgepcap_") and n != "edgepcap_sampler"]


def lab_down(data_dir: Path) -> None:
    subprocess.run(
        [EDGEPCAP, "lab", "down", "--data-dir", str(data_dir)],
        capture_output=True,
        timeout=120,
        check=False,
    )


@contextlib.contextmanager
def running_lab(
    data_dir: Path,
    s3_server: str,
    database: str | None = None,
    colos: tuple[str, ...] = ("ORD",),
) -> Iterator[Lab]:
    """`edgepcap lab up` with two machines of each colo (ORD); always `lab down` afterwards.

    Its api and agents reach moto's S3 server as their S3 endpoint.
    """
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, nftables)")
    port = free_port()
    try:
        out = subprocess.run(
            [
                EDGEPCAP,
                "lab",
                "up",
                "--data-dir",
                str(data_dir),
                *(arg for colo in colos for arg in ("--colo", colo)),
                "--machines",
                "2",
                "--listen",
                f"127.0.0.1:{port}",
                *(["--database", database] if database else []),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            # Sample captures are tested filter by filter: no one-per-minute wait here;
            # one tenant runs many full captures back to back (the soak test 100): no
            # full-capture rate. The limits themselves are tested against the api.
            env={
                **os.environ,
                **S3_ENV,
                "EDGEPCAP_S3_ENDPOINT": s3_server,
                "EDGEPCAP_SAMPLE_INTERVAL": "0",
                "EDGEPCAP_FULL_CAPTURE_RATE": "0",
            },
        )
        assert out.returncode == 0, out.stderr[-3000:]
        yield Lab(
            data_dir=data_dir, info=json.loads((data_dir / "lab.json").read_text()), s3=s3_server
        )
    finally:
        lab_down(data_dir)

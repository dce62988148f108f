"""Agent memory during a 1 GB full capture: peak RSS of each agent while the bytes stream out.

Run as root: `uv run python bench/agent_memory.py [--gigabytes 1.0]`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from edgepcap.formats import protocol
from edgepcap.lab import lab as labmod


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gigabytes", type=float, default=1.0)
    args = parser.parse_args()
    target = int(args.gigabytes * 1e9)
    data = Path(tempfile.mkdtemp(prefix="edgepcap-bench-mem-"))
    edgepcap = str(Path(sys.executable).parent / "edgepcap")
    try:
        info = labmod.up(data, "ORD", 2, f"127.0.0.1:{free_port()}", None)
        pids = {m: labmod.agent_pid(data, m) for m in ("ord01", "ord02")}
        c = httpx.Client(
            base_url=f"{info['api']}/client/v4/accounts/{info['account_id']}",
            headers={"Authorization": f"Bearer {info['api_token']}"},
            timeout=30,
        )
        r = c.post(
            "/pcaps",
            json={
                "system": "magic-transit",
                "type": "full",
                "time_limit": 600,
                "colo_name": "ORD",
                "destination_conf": info["destination_conf"],
                "filter_v1": {"protocol": 17},
            },
        )
        pcap_id = r.json()["result"]["id"]
        while c.get(f"/pcaps/{pcap_id}").json()["result"]["status"] != "running":
            time.sleep(0.05)
        peak = {m: 0 for m in pids}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                for m, pid in pids.items():
                    peak[m] = max(peak[m], rss_kib(pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start_rss = {m: rss_kib(pid, "VmRSS") for m, pid in pids.items()}
        t0 = time.monotonic()
        captured = 0
        while captured < target and time.monotonic() - t0 < 600:
            subprocess.run(
                [
                    edgepcap,
                    "lab",
                    "traffic",
                    "--data-dir",
                    str(data),
                    "--count",
                    "50000",
                    "--size",
                    "1400",
                    "--proto",
                    "udp",
                    "--tenant",
                    "customer",
                ],
                check=True,
                capture_output=True,
            )
            result = c.get(f"/pcaps/{pcap_id}").json()["result"]
            captured = sum(m["bytes"] for m in result["machines"])
        c.put(f"/pcaps/{pcap_id}/stop")
        while (result := c.get(f"/pcaps/{pcap_id}").json()["result"])["status"] == "running":
            time.sleep(0.1)
        stop.set()
        sampler.join()
        files = {
            p.parent.name: p.stat().st_size
            for p in Path(info["destination_conf"][7:]).glob(protocol.object_name("*", pcap_id))
        }
        out = {
            "figure": "agent peak RSS during a full capture",
            "captured_bytes": sum(m["bytes"] for m in result["machines"]),
            "file_bytes": files,
            "dropped": {m["machine"]: m["dropped"] for m in result["machines"]},
            "kernel_matched": {m["machine"]: m["kernel_matched"] for m in result["machines"]},
            "written": {m["machine"]: m["packets"] for m in result["machines"]},
            "rss_start_mib": {m: round(v / 1024, 1) for m, v in start_rss.items()},
            "rss_peak_mib": {m: round(v / 1024, 1) for m, v in peak.items()},
            "seconds": round(time.monotonic() - t0, 1),
            "status": result["status"],
        }
        print(json.dumps(out))
        return 0
    finally:
        labmod.down(data)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

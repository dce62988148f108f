"""Trigger latency: from the first packet of a spike to its full capture running, in the lab.

The lab (`edgepcap lab up`: two machines of ORD with their agents and samplers, and the
API) gets one trigger per run, on a port of its own, with a threshold just under the rate
then sent: paced UDP from the client namespace to the first customer host. The run's
figure is the time from the first datagram sent to the trigger's capture reported
`running` by the API. The baseline is the same capture created by hand: `POST /pcaps` to
`running`, what a person who had already noticed the spike would wait for on top.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.figures import Figure, percentile
from bench.live import SEND
from tests.support.lab import Lab, running_lab

RATE = 2000  # datagrams per second, to one host
WINDOW = 10
# Just under the rate: the estimate over the window reaches it about 0.9 window in.
THRESHOLD = int(RATE * 0.9)
PORT = 7400  # the first run's port; run i uses PORT + i


def _poll(what: Any, timeout: float, every: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := what():
            return found
        time.sleep(every)
    raise TimeoutError(f"no answer in {timeout} s")


def _running(lab: Lab, pcap_id: str) -> bool:
    return lab.get(pcap_id)["status"] == "running"


def _capture(lab: Lab, port: int) -> dict[str, Any]:
    return {
        "system": "magic-transit",
        "type": "full",
        "colo_name": lab["colo"],
        "destination_conf": lab["destination_conf"],
        "time_limit": 5,
        "filter_v1": {"protocol": 17, "destination_port": port},
    }


def one_run(lab: Lab, port: int) -> dict[str, float]:
    """Arm, send, wait for the capture to run; stop it. Seconds from the first datagram."""
    with lab.client() as c:
        r = c.post(
            "/pcaps/triggers",
            json={
                "filter_v1": {"protocol": 17, "destination_port": port},
                "threshold_pps": THRESHOLD,
                "window": WINDOW,
                "cooldown": 300,
                "capture": _capture(lab, port),
            },
        )
        r.raise_for_status()
        trigger = r.json()["result"]["id"]
        host = lab["hosts"][0]["v4"]
        ns = lab["namespaces"]["client"]
        argv = ["ip", "netns", "exec", ns, sys.executable, "-c", SEND]
        # At most 3 windows of traffic: the capture runs long before.
        argv += [host, str(port), str(RATE), str(RATE * 3 * WINDOW)]
        started = time.monotonic()
        sender = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        try:

            def fired() -> str | None:
                got = c.get(f"/pcaps/triggers/{trigger}").json()["result"]["fired"]
                return got[0]["pcap_id"] if got else None

            pcap = _poll(fired, 3 * WINDOW)
            fired_s = time.monotonic() - started
            _poll(lambda: _running(lab, pcap), 10)
            running_s = time.monotonic() - started
        finally:
            sender.terminate()
            sender.wait(10)
        c.put(f"/pcaps/{pcap}/stop")
        lab.wait_end(pcap)
        c.delete(f"/pcaps/triggers/{trigger}")
    return {"fired_s": fired_s, "running_s": running_s}


def by_hand(lab: Lab, port: int) -> float:
    """Seconds from `POST /pcaps` of the same capture to `running`."""
    with lab.client() as c:
        started = time.monotonic()
        r = c.post("/pcaps", json=_capture(lab, port))
        r.raise_for_status()
        pcap = r.json()["result"]["id"]
        _poll(lambda: _running(lab, pcap), 10)
        took = time.monotonic() - started
        c.put(f"/pcaps/{pcap}/stop")
        lab.wait_end(pcap)
    return took


def measure(runs: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="edgepcap-bench-triggers-") as tmp,
        running_lab(Path(tmp) / "lab", "") as lab,
    ):
        ours = [one_run(lab, PORT + i) for i in range(runs)]
        hand = [by_hand(lab, PORT + runs + i) for i in range(runs)]
    return {
        "runs": runs,
        "rate_pps": RATE,
        "threshold_pps": THRESHOLD,
        "window_s": WINDOW,
        "running_s": sorted(r["running_s"] for r in ours),
        "fired_s": sorted(r["fired_s"] for r in ours),
        "by_hand_s": sorted(hand),
    }


def figure(quick: bool) -> Figure:
    r = measure(2 if quick else 5)
    p50 = percentile(r["running_s"], 50)
    return Figure(
        "trigger: a spike's first packet → its full capture running",
        p50,
        percentile(r["by_hand_s"], 50),
        f"p50 < window + 3 s ({WINDOW + 3} s)",
        p50 < WINDOW + 3,
        "s p50",
        f"threshold {THRESHOLD} pps under {RATE} pps sent: the window's estimate reaches it "
        f"~{THRESHOLD / RATE:.1f} window in; baseline: the capture created by hand → running",
        r,
    )

"""The `edgepcap` interface in Wireshark: the extcap protocol, the capture filter as
filter_v1, and a headless capture through tshark in the lab."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edgepcap.extcap import FilterError, filter_v1
from tests.support.live import send_udp
from tests.support.packets import tshark_fields
from tests.support.processes import EDGEPCAP

EXTCAP = [sys.executable, "-P", "-m", "edgepcap.extcap"]


@pytest.mark.parametrize(
    ("expression", "wanted"),
    [
        ("", {}),
        ("udp dst port 5555", {"protocol": 17, "destination_port": 5555}),
        (
            "tcp and src host 198.51.100.7 and dst port 80",
            {"protocol": 6, "source_address": "198.51.100.7", "destination_port": 80},
        ),
        ("dst host 2001:db8::1 && icmp6", {"destination_address": "2001:db8::1", "protocol": 58}),
        ("ip proto 47", {"protocol": 47}),
        ("udp port 5555", {"protocol": 17, "port": 5555}),  # either direction
        ("host 192.0.2.1 and tcp port 80", {"address": "192.0.2.1", "protocol": 6, "port": 80}),
        ("src port 53 and udp", {"source_port": 53, "protocol": 17}),
    ],
)
def test_capture_filters_filter_v1_can_express(expression, wanted):
    assert filter_v1(expression) == wanted


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("port 1 and port 2", "`port 2` contradicts an earlier part"),
        ("net 10.0.0.0/8", "`net 10.0.0.0/8`: filter_v1 cannot express it"),
        ("udp or tcp", "`or`: filter_v1 fields are joined by `and` only"),
        ("not tcp", "`not`: filter_v1 cannot leave packets out"),
        ("icmp and dst port 5", "protocol 1 has no ports"),
        ("dst port 70000", "not a number from 1 to 65535"),
        ("dst host example.com", "'example.com' is not an IP address"),
        ("tcp and udp", "`udp` contradicts an earlier part"),
        ("tcp and", "ends with `and`"),
    ],
)
def test_what_filter_v1_cannot_express_is_refused_by_name(expression, says):
    with pytest.raises(FilterError) as caught:
        filter_v1(expression)
    assert says in str(caught.value)


def test_the_extcap_protocol_lists_the_interface_its_link_type_and_options():
    def ask(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EXTCAP, *args], capture_output=True, text=True, timeout=30)

    out = ask("--extcap-interfaces", "--extcap-version=4.0").stdout.splitlines()
    assert out[0].startswith("extcap {version=1.0}")
    assert out[1].startswith("interface {value=edgepcap}")
    assert ask("--extcap-interface", "edgepcap", "--extcap-dlts").stdout.startswith(
        "dlt {number=101}{name=RAW}"
    )
    config = ask("--extcap-interface", "edgepcap", "--extcap-config").stdout
    calls = [line.split("{call=")[1].split("}")[0] for line in config.splitlines()]
    assert calls == [
        "--api",
        "--account",
        "--token",
        "--token-file",
        "--colo",
        "--destination",
        "--time-limit",
        "--packet-limit",
        "--byte-limit",
    ]
    assert "{call=--token}{display=API token}{type=password}" in config
    # Wireshark checks a capture filter: silent when it is good, the reason when not.
    good = ask("--extcap-interface", "edgepcap", "--extcap-capture-filter", "udp dst port 53")
    assert good.returncode == 0 and good.stdout == ""
    bad = ask("--extcap-interface", "edgepcap", "--extcap-capture-filter", "udp or tcp")
    assert bad.returncode == 1 and "joined by `and` only" in bad.stdout


@pytest.mark.root  # the lab, and Wireshark's extcap folder (4.0: the one for every user)
def test_tshark_captures_headless_through_the_edgepcap_interface(lab, tmp_path):
    home = tmp_path / "home"  # Wireshark's personal files for this test only
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    installed = subprocess.run(
        [EDGEPCAP, "extcap", "install"], capture_output=True, text=True, env=env
    )
    assert installed.returncode == 0, installed.stderr
    try:
        listed = subprocess.run(["tshark", "-D"], capture_output=True, text=True, env=env).stdout
        assert "edgepcap (edgepcap full capture (live))" in listed
        # tshark passes no password option to an extcap: headless, the token is in a file
        # (0600, the user's) whose name is an option.
        token_file = tmp_path / "token"
        token_file.write_text(lab["api_token"])
        token_file.chmod(0o600)
        prefs = [
            f"extcap.edgepcap.api:{lab['api']}",
            f"extcap.edgepcap.account:{lab['account_id']}",
            f"extcap.edgepcap.tokenfile:{token_file}",
            "extcap.edgepcap.colo:ORD",
            f"extcap.edgepcap.destination:{lab['destination_conf']}",
        ]
        out = tmp_path / "out.pcapng"
        argv = ["tshark", "-i", "edgepcap", *(a for p in prefs for a in ("-o", p))]
        argv += ["-f", "udp port 5555", "-a", "packets:100", "-a", "duration:60", "-w", str(out)]
        tshark = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        try:
            rounds = 0
            while tshark.poll() is None:  # traffic until tshark has its 100 packets
                rounds += 1
                assert rounds <= 400, "tshark never had its 100 packets"
                send_udp(lab, 5555, 1)
                send_udp(lab, 5556, 1)  # not the filter's: never in the capture
                time.sleep(0.1)
            err = tshark.stderr.read() if tshark.stderr else ""
        finally:
            if tshark.poll() is None:
                tshark.kill()
        assert tshark.returncode == 0, err
        # The password is never written: not in Wireshark's files, not in what it would
        # save as preferences.
        typed = f"extcap.edgepcap.token:{lab['api_token']}"  # as typed in Wireshark's dialog
        saved = subprocess.run(
            ["tshark", "-G", "currentprefs", "-o", typed], capture_output=True, text=True, env=env
        ).stdout
        assert "extcap.edgepcap.api" in saved and lab["api_token"] not in saved
        for path in home.rglob("*"):
            if path.is_file():
                assert lab["api_token"].encode() not in path.read_bytes(), path
    finally:
        subprocess.run([EDGEPCAP, "extcap", "uninstall"], capture_output=True, env=env)
    rows = tshark_fields(out, "frame.interface_name", "udp.dstport")
    assert len(rows) == 100
    assert {r[1] for r in rows} == {"5555"}
    assert {r[0] for r in rows} <= {"ord01", "ord02"}
    # Stopping in tshark stopped the capture; what it caught stays in the bucket.
    with lab.client() as c:
        pcap = c.get("/pcaps").json()["result"][0]
    assert pcap["filter_v1"] == {"protocol": 17, "port": 5555}
    done = lab.wait_end(pcap["id"])
    assert done["status"] == "success" and done["stop_requested"]
    assert done["packets_captured"] >= 100

"""`edgepcap pcaps …` / `edgepcap buckets …` against a real server: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess

from edgepcap.formats.pcapfile import Packet
from tests.support.packets import udp, write_pcap
from tests.support.processes import EDGEPCAP


def run(stack, account, *args, token=None, env_extra=None):
    # As a script runs it: output to a pipe, no COLUMNS.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env |= {
        "EDGEPCAP_API": stack.server.url,
        "EDGEPCAP_ACCOUNT": account.id,
        "EDGEPCAP_TOKEN": token or account.api_token,
        **(env_extra or {}),
    }
    return subprocess.run([EDGEPCAP, *args], capture_output=True, text=True, env=env, timeout=60)


def test_buckets_and_captures_from_the_command_line(stack, tmp_path):
    acct = stack.account()
    directory = stack.server.data_dir / "buckets" / f"cli-{acct.id}"
    directory.mkdir(parents=True)
    conf = f"file://{directory}"

    out = run(stack, acct, "buckets", "add", conf)
    assert out.returncode == 0, out.stderr
    assert "ownership-challenge-" in out.stdout
    # The command to run next is printed whole, on one line, however long the bucket's URL.
    assert f"  edgepcap buckets validate {conf} --challenge <its contents>\n" in out.stdout
    challenge_file = next(directory.glob("ownership-challenge-*.txt"))

    out = run(stack, acct, "buckets", "validate", conf, "--challenge", "nope")
    assert out.returncode == 1
    assert "does not match" in out.stderr and "Traceback" not in out.stderr
    out = run(stack, acct, "buckets", "validate", conf, "--challenge-file", str(challenge_file))
    assert out.returncode == 0 and "success" in out.stdout
    buckets = json.loads(run(stack, acct, "buckets", "list", "--json").stdout)
    assert [b["status"] for b in buckets] == ["success"]
    out = run(stack, acct, "buckets", "add", conf)
    assert out.returncode == 0 and "already validated" in out.stdout, out.stdout
    assert "buckets validate" not in out.stdout
    listing = run(stack, acct, "buckets", "list")
    assert listing.returncode == 0 and buckets[0]["id"] in listing.stdout

    out = run(
        stack,
        acct,
        "pcaps",
        "create",
        "--type",
        "simple",
        "--time-limit",
        "60",
        "--packet-limit",
        "100",
        "--proto",
        "17",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    sample = json.loads(out.stdout)
    assert sample["status"] == "success" and sample["filter_v1"] == {"protocol": 17}

    out = run(
        stack,
        acct,
        "pcaps",
        "create",
        "--type",
        "full",
        "--time-limit",
        "300",
        "--colo",
        "ORD",
        "--destination",
        conf,
        "--dport",
        "53",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    full = json.loads(out.stdout)
    assert full["status"] == "pending" and full["filter_v1"] == {"destination_port": 53}

    listing = run(stack, acct, "pcaps", "list")
    assert listing.returncode == 0 and full["id"] in listing.stdout
    assert sample["id"] in listing.stdout
    listed = json.loads(run(stack, acct, "pcaps", "list", "--json").stdout)
    assert [p["id"] for p in listed] == [full["id"], sample["id"]]

    got = run(stack, acct, "pcaps", "get", full["id"])
    assert got.returncode == 0 and "pending" in got.stdout and "ORD" in got.stdout

    write_pcap(
        directory / "ord01" / f"pcap_{full['id']}.pcap",
        [
            Packet(
                1_790_000_000_000_000_000 + i * 1000,
                60,
                udp("198.51.100.9", acct.host(1), 4000 + i % 3, 53),
            )
            for i in range(30)
        ],
    )
    # ord01 captures, is told to stop and reports its file written: the download reads
    # only what machines reported.
    me = stack.machine
    r = me.http.post(f"/captures/{full['id']}/report", json={**me.me, "state": "running"})
    assert r.status_code == 200, r.text
    out = run(stack, acct, "pcaps", "stop", full["id"], "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["stop_requested"]
    me.finish(full["id"])
    assert json.loads(run(stack, acct, "pcaps", "get", full["id"], "--json").stdout)["status"] == (
        "success"
    )

    target = tmp_path / "capture.pcap"
    out = run(stack, acct, "pcaps", "download", full["id"], "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert target.stat().st_size == 24 + 30 * (16 + 60)

    summary = json.loads(run(stack, acct, "pcaps", "summary", str(target), "--json").stdout)
    assert summary["packets"] == 30 and summary["protocols"][0]["protocol"] == "UDP"
    assert summary["top_sources"][0]["source"] == "198.51.100.9"
    assert summary["top_conversations"][0]["destination"] == acct.host(1)
    text = run(stack, acct, "pcaps", "summary", str(target))
    assert "30 packets" in text.stdout and "top talkers" in text.stdout

    bucket_id = buckets[0]["id"]
    assert run(stack, acct, "buckets", "delete", bucket_id).returncode == 0
    assert json.loads(run(stack, acct, "buckets", "list", "--json").stdout) == []


def test_errors_print_the_apis_message_and_exit_non_zero(stack, tmp_path):
    acct = stack.account()
    out = run(
        stack,
        acct,
        "pcaps",
        "create",
        "--type",
        "simple",
        "--time-limit",
        "301",
        "--packet-limit",
        "5",
    )
    assert out.returncode == 1
    assert "between 1 and 300 seconds" in out.stderr and "Traceback" not in out.stderr

    out = run(stack, acct, "pcaps", "list", token="ept_wrong")
    assert out.returncode == 1 and "invalid API token" in out.stderr

    out = run(stack, acct, "pcaps", "get", "0" * 32)
    assert out.returncode == 1 and "no packet capture" in out.stderr

    target = tmp_path / "never.pcap"
    out = run(stack, acct, "pcaps", "download", "0" * 32, "-o", str(target))
    assert out.returncode == 1 and not target.exists()
    assert not list(tmp_path.glob(".*part"))

    out = subprocess.run(
        [EDGEPCAP, "pcaps", "list"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGEPCAP_")},
        timeout=60,
    )
    assert out.returncode == 2 and "EDGEPCAP_API" in out.stderr

    broken = tmp_path / "broken.pcap"
    broken.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 10)
    out = run(stack, acct, "pcaps", "summary", str(broken))
    assert out.returncode == 1 and "too short" in out.stderr
    ng = tmp_path / "x.pcapng"
    ng.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\x00" * 40)
    out = run(stack, acct, "pcaps", "summary", str(ng))
    assert out.returncode == 1 and "a pcapng file" in out.stderr and "--format pcap" in out.stderr

    # Watching what does not stream leaves a file given with -o as it was.
    kept = tmp_path / "kept.pcapng"
    kept.write_bytes(b"what was there")
    out = run(stack, acct, "pcaps", "watch", "0" * 32, "-o", str(kept))
    assert out.returncode == 1 and "no packet capture" in out.stderr
    assert kept.read_bytes() == b"what was there"
    # Usage errors: 2, before anything is created.
    common = ("pcaps", "create", "--type", "full", "--time-limit", "5", "--colo", "x")
    out = run(stack, acct, *common, "-o", str(kept))
    assert out.returncode == 2 and "give --watch too" in out.stderr
    out = run(stack, acct, *common, "--watch", "--wait", "-o", str(kept))
    assert out.returncode == 2 and "--watch or --wait" in out.stderr


def test_text_from_the_server_prints_as_text_not_markup(stack):
    # The server echoes what it was sent; Rich would have read it as markup (a link).
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    colo = "[link=http://x]ord01[/link] :warning:"
    out = run(
        stack,
        acct,
        "pcaps",
        "create",
        "--type",
        "full",
        "--time-limit",
        "5",
        "--colo",
        colo,
        "--destination",
        conf,
    )
    assert out.returncode == 1
    assert f"error: `colo_name` '{colo}' is neither" in out.stderr, out.stderr


def test_terminal_escapes_in_text_from_the_server_do_not_reach_the_terminal(stack):
    # A machine's error message reaches every customer whose capture ran there; an escape
    # sequence in it could make a link, clear the screen or retitle the terminal.
    acct = stack.account()
    conf = stack.validated_bucket(acct)
    full = stack.client(acct).post(
        "/pcaps",
        json={"system": "magic-transit", "type": "full", "time_limit": 60, "colo_name": "ORD",
              "destination_conf": conf},
    ).json()["result"]  # fmt: skip
    error = "disk \x1b]8;;http://x\x1b\\full\x1b]8;;\x1b\\\x1b[2J"
    stack.machine.finish(full["id"], done=False, error=error)
    out = run(stack, acct, "pcaps", "get", full["id"])
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout, repr(out.stdout)
    assert error.replace("\x1b", "\ufffd") in out.stdout, out.stdout
    assert (
        json.loads(run(stack, acct, "pcaps", "get", full["id"], "--json").stdout)["machines"][0][
            "error"
        ]
        == error
    )  # --json is the API's answer as it is


def test_the_token_can_come_from_a_file(stack, tmp_path):
    # Neither an argument (ps shows it) nor the environment of all the shell starts.
    acct = stack.account()
    token_file = tmp_path / "token"
    token_file.write_text(acct.api_token + "\n")
    env = {"EDGEPCAP_TOKEN": "", "EDGEPCAP_TOKEN_FILE": str(token_file)}
    out = run(stack, acct, "pcaps", "list", "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
    env["EDGEPCAP_TOKEN_FILE"] = str(tmp_path / "missing")
    out = run(stack, acct, "pcaps", "list", env_extra=env)
    assert out.returncode == 2
    assert "cannot read EDGEPCAP_TOKEN_FILE" in out.stderr and "Traceback" not in out.stderr

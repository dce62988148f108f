"""An `edgepcap` interface in Wireshark's capture list: Wireshark's extcap protocol.

Wireshark runs the launcher `edgepcap extcap install` put in its extcap folder: to list
the interface (`--extcap-interfaces`), its link type (`--extcap-dlts`), its options
(`--extcap-config`: the API, account, token, colo, bucket and limits), to check a capture
filter (`--extcap-capture-filter`), and to capture (`--capture --fifo PATH`): a full
capture is created through the API with the capture filter as its `filter_v1`, and its
live pcapng stream is written into the FIFO until the capture ends. Stopping in Wireshark
(SIGINT, SIGTERM, or the FIFO closing) stops the capture through the API; what it caught
stays in the bucket.

Hand-written: the protocol is a few lines of text on stdout and argv, and the libraries
that wrap it (e.g. pyshark) are for reading captures, not for being an interface.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from edgepcap.client import Client, ClientError, Settings
from edgepcap.formats.pcapfile import LINKTYPE_RAW

INTERFACE = "edgepcap"
PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58}
# Options Wireshark shows for the interface: (call, display, type, tooltip, extra).
REQUIRED = "{required=true}"
OPTIONS = (
    ("--api", "API URL", "string", "The edgepcap API, as EDGEPCAP_API takes it", REQUIRED),
    ("--account", "Account ID", "string", "Your account's id", REQUIRED),
    # A password: Wireshark keeps its value in memory, never in its preference files (and
    # tshark passes none: headless, the token comes from a file, or EDGEPCAP_TOKEN(_FILE)).
    ("--token", "API token", "password", "Prefer the file below: this is on the command line", ""),
    ("--token-file", "API token file", "fileselect", "A file holding your API token", ""),
    ("--colo", "Colo or machine", "string", "A colo (ORD) or a machine (ord02)", REQUIRED),
    ("--destination", "Bucket", "string", "A validated bucket (destination_conf)", REQUIRED),
    ("--time-limit", "Time limit (s)", "integer", "Ends after this long", "{default=300}"),
    ("--packet-limit", "Packet limit", "integer", "Ends after this many (0: none)", "{default=0}"),
    (
        "--byte-limit",
        "Byte limit",
        "integer",
        "Ends after so many bytes (0: none)",
        "{default=0}",
    ),
)


class FilterError(ValueError):
    """A capture filter filter_v1 cannot express; the message names the part."""


def filter_v1(expression: str) -> dict[str, Any]:
    """Wireshark's capture filter as `filter_v1`: `[src|dst] host ADDR`, `[src|dst] port
    N` (without a direction: either way, edgepcap's `address` and `port`),
    `tcp|udp|icmp|icmp6`, `ip proto N`, joined by `and`; a protocol may qualify a port
    (`udp port 53`). Anything else is refused, naming what cannot be expressed."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any, words: str) -> None:
        if key in out and out[key] != value:
            raise FilterError(f"`{words}` contradicts an earlier part of the filter")
        out[key] = value

    for clause in _clauses(expression):
        words = " ".join(clause)
        rest = clause
        if rest[0] in PROTOCOLS:
            put("protocol", PROTOCOLS[rest[0]], words)
            rest = rest[1:]
            if not rest:
                continue
        if rest[:2] == ["ip", "proto"] and len(rest) == 3:
            put("protocol", _number(rest[2], 0, 255, words), words)
        elif len(rest) == 3 and rest[0] in ("src", "dst") and rest[1] == "host":
            key = "source_address" if rest[0] == "src" else "destination_address"
            put(key, _address(rest[2], words), words)
        elif len(rest) == 3 and rest[0] in ("src", "dst") and rest[1] == "port":
            key = "source_port" if rest[0] == "src" else "destination_port"
            put(key, _number(rest[2], 1, 65535, words), words)
        elif len(rest) == 2 and rest[0] == "host":  # either direction: edgepcap's field
            put("address", _address(rest[1], words), words)
        elif len(rest) == 2 and rest[0] == "port":
            put("port", _number(rest[1], 1, 65535, words), words)
        else:
            raise FilterError(f"`{words}`: filter_v1 cannot express it")
    from edgepcap.formats.filters import PORT_PROTOCOLS

    protocol = out.get("protocol")
    if any(k in out for k in ("source_port", "destination_port", "port")) and protocol not in (
        None,
        *PORT_PROTOCOLS,
    ):
        raise FilterError(f"protocol {protocol} has no ports")
    return out


def _clauses(expression: str) -> Iterator[list[str]]:
    words = expression.replace("&&", " and ").split()
    clause: list[str] = []
    for word in words:
        if word == "and":
            if not clause:
                raise FilterError("`and` with nothing before it")
            yield clause
            clause = []
        elif word in ("not", "!"):
            raise FilterError(f"`{word}`: filter_v1 cannot leave packets out, only match them")
        elif word in ("or", "||") or word.startswith("("):
            raise FilterError(f"`{word}`: filter_v1 fields are joined by `and` only")
        else:
            clause.append(word.lower())
    if clause:
        yield clause
    elif words:
        raise FilterError("the filter ends with `and`")


def _number(text: str, low: int, high: int, words: str) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise FilterError(f"`{words}`: {text!r} is not a number from {low} to {high}")
    return int(text)


def _address(text: str, words: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise FilterError(f"`{words}`: {text!r} is not an IP address") from None


class Stopped(Exception):
    """Wireshark told the extcap to stop (SIGINT or SIGTERM)."""


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise Stopped


def capture(args: argparse.Namespace, fifo: BinaryIO) -> int:
    """Create the full capture and copy its live stream into `fifo` until it ends."""
    token = args.token
    if not token and args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            message = f"cannot read the token file {args.token_file}: {exc.strerror}"
            raise ClientError(0, message) from None
    client = Client(Settings.resolve(args.api, args.account, token))
    body: dict[str, Any] = {
        "system": "magic-transit",
        "type": "full",
        "time_limit": args.time_limit,
        "colo_name": args.colo,
        "destination_conf": args.destination,
        "filter_v1": filter_v1(args.extcap_capture_filter or ""),
    }
    if args.packet_limit:
        body["packet_limit"] = args.packet_limit
    if args.byte_limit:
        body["byte_limit"] = args.byte_limit
    # A stop that comes while the capture is being created waits for its id: a capture
    # left running would hold the account's one full-capture place until its time limit.
    stops = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        pcap = client.create(body)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        raise
    ended = False
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # a stop that came raises here
        for chunk in client.stream(pcap["id"]):
            fifo.write(chunk)
            fifo.flush()
        ended = True  # the capture ended by itself
    except (Stopped, BrokenPipeError):
        pass  # Wireshark stopped, or closed its end: stop the capture for everyone
    finally:
        if not ended:  # also when the stream broke: the capture must not go on alone
            _stop_capture(client, pcap["id"])
    return 0


def _stop_capture(client: Client, pcap_id: str) -> None:
    """Stop the capture (what it caught stays in the bucket); a second signal meanwhile
    does not cut this short."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        client.stop(pcap_id)
    except ClientError as exc:
        if exc.status != 409:  # 409: it had ended already
            print(f"stopping capture {pcap_id}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgepcap-extcap", add_help=False)
    for flag in ("--extcap-interfaces", "--extcap-dlts", "--extcap-config", "--capture"):
        parser.add_argument(flag, action="store_true")
    for name in ("--extcap-version", "--extcap-interface", "--extcap-capture-filter", "--fifo"):
        parser.add_argument(name)
    for name in ("--api", "--account", "--token", "--token-file", "--colo", "--destination"):
        parser.add_argument(name)
    parser.add_argument("--time-limit", type=int, default=300)
    parser.add_argument("--packet-limit", type=int, default=0)
    parser.add_argument("--byte-limit", type=int, default=0)
    args, _unknown = parser.parse_known_args(argv)  # Wireshark may add options of its own
    if args.extcap_interfaces:
        print("extcap {version=1.0}{display=edgepcap: live captures from edge machines}")
        print(f"interface {{value={INTERFACE}}}{{display=edgepcap full capture (live)}}")
        return 0
    if args.extcap_interface not in (None, INTERFACE):
        print(f"no interface {args.extcap_interface!r} here: only {INTERFACE}", file=sys.stderr)
        return 2
    if args.extcap_dlts:
        print(
            f"dlt {{number={LINKTYPE_RAW}}}{{name=RAW}}{{display=Raw IP, machines as interfaces}}"
        )
        return 0
    if args.extcap_config:
        for number, (call, display, kind, tooltip, extra) in enumerate(OPTIONS):
            print(
                f"arg {{number={number}}}{{call={call}}}{{display={display}}}"
                f"{{type={kind}}}{{tooltip={tooltip}}}{extra}"
            )
        return 0
    if not args.capture:
        if args.extcap_capture_filter is not None:  # Wireshark checking a filter
            try:
                filter_v1(args.extcap_capture_filter)
            except FilterError as exc:
                print(exc)
                return 1
            return 0
        print("edgepcap-extcap is run by Wireshark (`edgepcap extcap install`)", file=sys.stderr)
        return 2
    if not args.fifo:
        print("--capture needs --fifo", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        with open(args.fifo, "wb") as fifo:
            return capture(args, fifo)
    except (FilterError, ClientError) as exc:
        print(f"edgepcap: {exc}", file=sys.stderr)
        return 1
    except Stopped:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

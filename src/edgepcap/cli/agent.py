"""`edgepcap agent`: one edge machine's agent.

The command checks its flags, then execs into `python -P -m edgepcap.agent` with them as
JSON: the long-running agent carries none of the CLI's libraries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from edgepcap.cli.options import _fail


def agent(
    api: Annotated[str, typer.Option(help="Control-plane URL, e.g. http://10.0.0.1:8080")],
    agent_key: Annotated[str, typer.Option(envvar="EDGEPCAP_AGENT_KEY", help="Agent key.")],
    colo: Annotated[str, typer.Option(help="This machine's colo, e.g. ORD.")],
    machine: Annotated[str, typer.Option(help="This machine's name, e.g. ord01.")],
    netns: Annotated[
        str | None, typer.Option(help="Capture in this network namespace (lab use).")
    ] = None,
    bucket_root: Annotated[
        Path | None, typer.Option(help="Where file:// buckets may live (EDGEPCAP_BUCKET_ROOT).")
    ] = None,
    sample_rate: Annotated[
        int, typer.Option(help="Sample 1 in N packets for sample captures (0: no sampler).")
    ] = 100,
    nflog_rcvbuf: Annotated[
        int | None,
        typer.Option(
            envvar="EDGEPCAP_NFLOG_RCVBUF",
            help="Receive buffer of each capture's NFLOG socket, bytes (the kernel doubles "
            "it; default: the agent's, 256 MiB).",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(help="Trust the API's certificate if this CA (PEM) signed it (https)."),
    ] = None,
) -> None:
    """Run one edge machine's agent (as root: it installs nftables rules)."""
    import sys
    from urllib.parse import urlsplit

    from edgepcap.control.fleet import FleetError, check_names

    try:
        colo, machine = check_names(colo, machine)
    except FleetError as exc:
        _fail(str(exc))
    url = urlsplit(api)
    if url.scheme not in ("http", "https") or not url.hostname:
        _fail(f"--api must be http(s)://HOST:PORT, got {api!r}")
    if ca_file is not None and not ca_file.is_file():
        _fail(f"--ca-file {ca_file}: no such file")
    if url.scheme == "http" and url.hostname not in ("127.0.0.1", "::1", "localhost"):
        typer.echo(
            f"warning: {api} is plain HTTP: the agent key and every job's bucket URL cross "
            "the network in clear (serve the API with --tls-cert/--tls-key, use https://)",
            err=True,
        )
    if sample_rate < 0 or sample_rate > 1_000_000:
        _fail("--sample-rate must be 0 (off) to 1000000")
    if nflog_rcvbuf is not None and not 4096 <= nflog_rcvbuf <= 1 << 30:
        _fail("--nflog-rcvbuf must be 4096 to 1073741824 bytes")
    # The agent runs for months: it execs into a process without the CLI's libraries
    # (Typer, Rich, the database models; BENCHMARKS.md, "Agent memory"). Same pid; the
    # key stays in the environment, out of the command line.
    os.environ["EDGEPCAP_AGENT_KEY"] = agent_key
    config = {
        "api": api,
        "colo": colo,
        "machine": machine,
        "netns": netns,
        "sample_rate": sample_rate,
        "nflog_rcvbuf": nflog_rcvbuf,
        "bucket_root": str(bucket_root.resolve()) if bucket_root else None,
        "ca_file": str(ca_file.resolve()) if ca_file else None,
    }
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the working directory is not on the path (the agent runs as root).
    argv = [sys.executable, "-P", "-m", "edgepcap.agent", json.dumps(config)]
    os.execv(sys.executable, argv)  # noqa: S606 - an argv list, no shell

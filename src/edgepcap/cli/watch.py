"""`edgepcap pcaps watch`: a running full capture, live, as pcapng on stdout (for
`| wireshark -k -i -`) or in a file; `pcaps create --watch` starts one and watches it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from edgepcap.cli.console import _die, err
from edgepcap.client import Client, ClientError

Output = Annotated[
    Path | None,
    typer.Option("-o", "--output", help="Write the pcapng here instead of to stdout."),
]


def follow(client: Client, pcap_id: str, output: Path | None) -> None:
    """Copy the capture's live stream to `output` (stdout when None) until it ends."""
    if output is None and sys.stdout.isatty():
        _die(
            "the stream is pcapng, not text: pipe it (`| wireshark -k -i -`, "
            "`| tshark -r -`) or give -o FILE",
            2,
        )
    written = 0
    sink: BinaryIO | None = None if output is not None else sys.stdout.buffer
    try:
        for chunk in client.stream(pcap_id):
            if sink is None:  # opened once the API answered: a refusal leaves a file as it was
                sink = output.open("wb")  # type: ignore[union-attr]
            sink.write(chunk)
            sink.flush()  # a reader downstream sees each packet as it comes
            written += len(chunk)
    except ClientError as exc:
        _die(str(exc))
    except KeyboardInterrupt:
        err.print(f"stopped watching after {written} bytes; the capture goes on")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        return  # the reader (Wireshark) went away: nothing left to tell it
    finally:
        if output is not None and sink is not None:
            sink.close()
    err.print(f"the capture ended; {written} bytes" + (f" in {output}" if output else ""))

"""How the customer commands print: server text as text, tables, JSON, errors.

Most text they print comes from the server (errors, a machine's error message, names a
customer chose): it is printed as it is, never read as Rich markup, and its terminal
control characters print as U+FFFD.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from typing import Any

import typer
from rich.console import Console
from rich.segment import Segment
from rich.table import Column, Table
from rich.text import Text

# Terminal control characters (C0 but tab and newline, DEL, C1) in printed text.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _PlainConsole(Console):
    """A console that prints control characters in text as U+FFFD.

    Most text comes from the server (errors, a machine's error message, names a customer
    chose): an escape sequence in it could make a link, clear the screen or retitle the
    terminal. Rich's own styling and cursor moves are not in that text (styles are
    rendered around it, cursor moves are control segments), so they pass.
    """

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            Segment(_UNPRINTABLE.sub("\ufffd", text), style, control) if not control else seg
            for seg in buffer
            for text, style, control in (seg,)
        )


def _console(stderr: bool = False) -> Console:
    # Strings print as they are: most come from the server (errors, a machine's error
    # message, names a customer chose), and Rich would read `[link=…]` in them as a link,
    # `:name:` as an emoji. Our own styling is given as Text objects.
    console = _PlainConsole(stderr=stderr, soft_wrap=True, markup=False, emoji=False)
    # The file itself: Rich's is_terminal also says yes under FORCE_COLOR, as CI sets it.
    isatty = getattr(console.file, "isatty", lambda: False)
    if not isatty() and "COLUMNS" not in os.environ:
        # Read by a script or copied from a log: Rich's default of 80 columns there cut
        # ids short in tables. Tables take the width they need instead.
        console.width = 1000
    return console


out = _console()
err = _console(stderr=True)


def _id_column() -> Column:
    # A new one per table: a Rich table keeps its cells in its Column objects.
    return Column("id", no_wrap=True, min_width=32)  # never cut: it is there to copy


def _die(message: str, code: int = 1) -> None:
    err.print(Text.assemble(("error:", "red"), f" {message}"), highlight=False)
    raise typer.Exit(code)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _show(p: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "type",
        "status",
        "submitted",
        "colo_name",
        "destination_conf",
        "time_limit",
        "packet_limit",
        "byte_limit",
        "offset_time",
        "stop_requested",
        "packets_captured",
        "error_message",
    ):
        if p.get(key) is not None:
            table.add_row(Text(key, style="bold"), str(p[key]))
    from edgepcap.formats.filters import summary  # pydantic: loaded by the commands that show

    table.add_row(Text("filter", style="bold"), summary(p.get("filter_v1") or {}))
    out.print(table)
    if p.get("machines"):
        machines = Table("machine", "state", "packets", "bytes", "dropped", "file / error")
        for m in p["machines"]:
            machines.add_row(
                m["machine"],
                m["state"],
                str(m["packets"]),
                str(m["bytes"]),
                str(m["dropped"]),
                m.get("error") or m.get("object") or "",
            )
        out.print(machines)

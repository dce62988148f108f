"""`edgepcap extcap install|uninstall`: the launcher that puts an `edgepcap` interface in
Wireshark's capture list (the protocol itself: `edgepcap.extcap`)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from edgepcap.cli.console import _die, err

LAUNCHER = "edgepcap-extcap"
MARK = "# edgepcap extcap launcher"
# Wireshark 4.2 and later name a folder of the user's own; 4.0 only the one for everyone.
FOLDER_LABELS = ("Personal Extcap path", "Extcap path")


def extcap_folder() -> Path:
    """The extcap folder Wireshark looks in, as `tshark -G folders` names it."""
    try:
        out = subprocess.run(
            ["tshark", "-G", "folders"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        _die(f"cannot ask Wireshark where its extcap folder is (tshark -G folders): {exc}")
    folders = dict(
        (label.strip(), path.strip())
        for label, _, path in (line.partition(":") for line in out.splitlines())
    )
    for label in FOLDER_LABELS:
        if folders.get(label):
            return Path(folders[label])
    _die("tshark -G folders names no extcap folder")
    raise AssertionError  # _die exits


def install() -> None:
    """Put an `edgepcap` interface in Wireshark's capture list (a launcher in the extcap
    folder `tshark -G folders` names)."""
    folder = extcap_folder()
    launcher = folder / LAUNCHER
    script = (
        f"#!/bin/sh\n{MARK}: runs this Python with edgepcap; remove with "
        f"`edgepcap extcap uninstall`\nexec {shlex.quote(sys.executable)} -P -m edgepcap.extcap "
        '"$@"\n'
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{LAUNCHER}.part"
        partial.write_text(script)
        partial.chmod(0o755)
        partial.replace(launcher)
    except OSError as exc:
        _die(
            f"cannot write {launcher}: {exc.strerror} (Wireshark 4.0 has only the folder for "
            "every user: run this as root there)"
        )
    err.print(f"installed {launcher}: restart Wireshark, then capture on `edgepcap`")


def uninstall() -> None:
    """Remove the launcher `install` put in Wireshark's extcap folder."""
    launcher = extcap_folder() / LAUNCHER
    if not launcher.exists():
        err.print(f"nothing to remove: no {launcher}")
        return
    if MARK not in launcher.read_text(errors="replace"):
        _die(f"{launcher} is not edgepcap's launcher: left alone")
    launcher.unlink()
    err.print(f"removed {launcher}")

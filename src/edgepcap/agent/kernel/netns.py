"""Network namespaces: run a thread or a command inside a named namespace (`ip netns`)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def path(name: str) -> str:
    return f"/run/netns/{name}"


def enter(name: str) -> None:
    """Move the calling thread (only it: netns are per thread) into namespace `name`."""
    fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(name: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `fn` in a fresh thread inside namespace `name` (or here if None); return its result."""
    if name is None:
        return fn(*args, **kwargs)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            enter(name)
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def argv(name: str | None, command: list[str]) -> list[str]:
    """The argv that runs `command` inside namespace `name` (unchanged when None)."""
    return ["ip", "netns", "exec", name, *command] if name else command


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)


def delete(name: str) -> None:
    if exists(name):
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def ip(name: str | None, *args: str) -> None:
    """Run `ip ARGS` in the namespace; raises with ip's own message on failure."""
    out = subprocess.run(argv(name, ["ip", *args]), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} (netns {name}): {out.stderr.strip()}")

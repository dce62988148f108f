"""Wakes agents' long polls at once when what their machines must do changes.

A change made here wakes the polls of the machines it concerns (or all of them) in this
process, and on PostgreSQL is told to the other API processes over LISTEN/NOTIFY
(`control.changes`), whose polls it wakes in turn. Polls still look at the database now
and then (`look_every`): every 0.1 s on SQLite, where no word comes from other processes,
or while the listener is away; otherwise only when they arrive (LOOK_LISTENING).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

from edgepcap.control.changes import Channel

# How often a waiting poll looks at the database itself.
LOOK_ALONE = 0.1  # SQLite, or the listener away: no word comes from other processes
# Listening, a poll looks when it arrives and when woken, not in between: every change
# that matters is announced, and at thousands of agents a look every few seconds per
# poll was most of the API's idle work (BENCHMARKS.md, fleet). The safety net for a
# change nobody announced is the agent's next poll, within the wait it asks for.
LOOK_LISTENING = 30.0


class Wakeup:
    def __init__(self, channel: Channel | None = None) -> None:
        """`channel`: the word from and to other API processes (PostgreSQL), if any;
        its messages wake polls here (`wake_here`)."""
        self._lock = threading.Lock()
        # Each waiting poll's event and loop, by the machine it polls for.
        self._waiting: dict[asyncio.Event, tuple[asyncio.AbstractEventLoop, str | None]] = {}
        self.closing = False
        self.channel = channel

    @property
    def look_every(self) -> float:
        listening = self.channel is not None and self.channel.listening
        return LOOK_LISTENING if listening else LOOK_ALONE

    def close(self) -> None:
        """The server is stopping: every long poll answers now, and new ones at once."""
        self.closing = True
        self.wake_here(None)

    def notify(self, machines: Iterable[str] | None = None) -> None:
        """Wake the polls of `machines` (None: every one), here and in the other API
        processes; callable from any thread, never blocks."""
        machines = None if machines is None else list(machines)
        self.wake_here(machines)
        if self.channel is not None:
            self.channel.publish(machines)

    def wake_here(self, machines: list[str] | None) -> None:
        """Wake this process's polls of `machines` (None: every one)."""
        wanted = None if machines is None else set(machines)
        with self._lock:
            waiting = [
                (event, loop)
                for event, (loop, machine) in self._waiting.items()
                if wanted is None or machine is None or machine in wanted
            ]
        for event, loop in waiting:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                loop.call_soon_threadsafe(event.set)

    def waiter(self, machine: str | None = None) -> Waiter:
        return Waiter(self, machine)


class Waiter:
    """One long poll's registration: created before it first looks, so no wakeup is lost."""

    def __init__(self, wakeup: Wakeup, machine: str | None = None) -> None:
        self._wakeup = wakeup
        self.event = asyncio.Event()
        with wakeup._lock:
            wakeup._waiting[self.event] = (asyncio.get_running_loop(), machine)

    async def wait(self, timeout: float) -> bool:
        """Until woken or `timeout` s; returns whether it was woken."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        woken = self.event.is_set()
        self.event.clear()
        return woken

    def close(self) -> None:
        with self._wakeup._lock:
            self._wakeup._waiting.pop(self.event, None)


def on_exit_signal(wakeup: Wakeup) -> Callable[[], None]:
    """Close `wakeup` when the server is told to stop (SIGINT, SIGTERM); returns the undo.

    uvicorn waits `timeout_graceful_shutdown` for open requests and then cancels them,
    and a cancelled long poll ends as a 500 with two tracebacks in the log. uvicorn tells
    the app nothing before that, so its own signal handlers are wrapped here: the long
    polls answer (no jobs) as soon as the signal arrives, and uvicorn goes on as before.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[object, object]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # not a server that stops gracefully on it: leave it be

        def handler(signum: int, frame: FrameType | None, previous: Callable = previous) -> None:
            # Runs on the loop's thread, maybe inside Wakeup's lock: close later, not here.
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
                loop.call_soon_threadsafe(wakeup.close)
            previous(signum, frame)

        signal.signal(sig, handler)
        installed[sig] = (handler, previous)

    def undo() -> None:
        for sig, (handler, previous) in installed.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, previous)  # type: ignore[arg-type]

    return undo

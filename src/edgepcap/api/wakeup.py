"""Wakes this process's agent long polls at once when captures change.

Long polls also look at the database every `POLL_EVERY` seconds, so a change made by
another API process on the same database still reaches them; a change made here reaches
them without that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import FrameType


class Wakeup:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
        self.closing = False

    def close(self) -> None:
        """The server is stopping: every long poll answers now, and new ones at once."""
        self.closing = True
        self.notify()

    def notify(self) -> None:
        """Wake every waiting long poll; callable from any thread."""
        with self._lock:
            waiting = list(self._waiting.items())
        for event, loop in waiting:
            loop.call_soon_threadsafe(event.set)

    def waiter(self) -> Waiter:
        return Waiter(self)


class Waiter:
    """One long poll's registration: created before it first looks, so no wakeup is lost."""

    def __init__(self, wakeup: Wakeup) -> None:
        self._wakeup = wakeup
        self.event = asyncio.Event()
        with wakeup._lock:
            wakeup._waiting[self.event] = asyncio.get_running_loop()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()

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

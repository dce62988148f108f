"""Wakes this process's agent long polls at once when captures change.

Long polls also look at the database every `POLL_EVERY` seconds, so a change made by
another API process on the same database still reaches them; a change made here reaches
them without that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Wakeup:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}

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

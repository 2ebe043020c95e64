"""Stopping cleanly: SIGTERM/SIGINT become a request that training honours at a step boundary."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopFlag:
    """Turns SIGTERM/SIGINT into a request to stop at the next step boundary (so a checkpoint can
    be written first).

    A second SIGINT (Ctrl-C twice) stops at once with ``KeyboardInterrupt``. Handlers are only
    installed in the main thread and are restored on exit.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def is_set(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

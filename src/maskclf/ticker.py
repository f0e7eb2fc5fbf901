"""Progress lines for long loops that have no bar (cache building, face detection,
prediction): no silent stretch over ``every_s`` seconds, the time left estimated from the
items done so far.

>>> import logging
>>> ticker = Ticker("decoding", 4, logging.getLogger("doctest"), every_s=0)
>>> ticker.tick(2)
'decoding: 2/4 (50%), eta 0m00s'
"""

from __future__ import annotations

import logging
import threading
import time


def duration(seconds: float) -> str:
    """``1m05s``, or ``1h02m`` from an hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Ticker:
    """Counts items of a loop (from any thread) and logs ``what: done/total (pct), eta``
    at most every ``every_s`` seconds; returns the line it logged, else None."""

    def __init__(self, what: str, total: int, logger: logging.Logger, every_s: float = 10.0):
        self.what, self.total, self.log, self.every_s = what, total, logger, every_s
        self.done = 0
        self._started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def tick(self, count: int = 1) -> str | None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self._last < self.every_s or not self.total:
                return None
            self._last = now
            left = (now - self._started) / self.done * max(0, self.total - self.done)
            line = (f"{self.what}: {self.done}/{self.total} "
                    f"({self.done / self.total:.0%}), eta {duration(left)}")
        self.log.info("%s", line)
        return line

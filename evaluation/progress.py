"""A dependency-free progress line with rate and ETA (a tqdm would be one more package for 40 lines)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _fmt(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Redraws in place on a terminal; on a log file prints about every 10%, so logs stay readable."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.desc, self.enabled = total, desc, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.done = 0
        self._last_pct = -10

    def update(self, n: int = 1, **fields: float) -> None:
        self.done += n
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100 * self.done / max(1, self.total)
        extra = " ".join(f"{k}={v:.4f}" for k, v in fields.items())
        line = (f"{self.desc} {pct:5.1f}% {self.done}/{self.total} [{_fmt(elapsed)}<{_fmt(eta)}, "
                f"{rate:.2f} it/s] {extra}")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if self.done >= self.total:
                self.stream.write("\n")
        elif pct - self._last_pct >= 10 or self.done >= self.total:
            self._last_pct = pct
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

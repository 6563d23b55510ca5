"""A small progress bar for long loops (training examples), on stderr.

On a terminal the bar is redrawn in place; otherwise (logs, CI) a line is
printed about every 10% so the output stays short.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, desc: str = "", *, enabled: bool = True, file=None,
                 width: int = 30) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.file, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_decile = -1
        self._shown = False

    def _line(self, done: int, note: str) -> str:
        frac = min(done / self.total, 1.0)
        filled = int(round(frac * self.width))
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        parts = [f"{self.desc} [{bar}] {done}/{self.total}", f"{elapsed:.0f}s<{eta:.0f}s",
                 f"{rate:.1f} it/s"]
        if note:
            parts.append(note)
        return " ".join(parts[:1]) + " " + ", ".join(parts[1:])

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            if done < self.total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            self.file.write("\r" + self._line(done, note) + "\x1b[K")
            self._shown = True
        else:
            decile = done * 10 // self.total
            if decile == self._last_decile:
                return
            self._last_decile = decile
            self.file.write(self._line(done, note) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._shown:
            self.file.write("\n")
            self.file.flush()
            self._shown = False

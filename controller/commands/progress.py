"""A one-line progress bar on a terminal, for commands that run for seconds.

Hand-written (a dozen lines) rather than a dependency: `simulate` only needs a bar redrawn in
place with `\\r`, and the caller decides whether the stream is a terminal at all (a log or a pipe
gets nothing).
"""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30  # characters of the bar itself


class ProgressBar:
    """`update(fraction)` redraws the bar when the shown percentage changes; `close()` erases it."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.started = time.monotonic()
        self.shown = -1  # the percentage drawn last

    def update(self, fraction: float) -> None:
        percent = int(100 * min(1.0, max(0.0, fraction)))
        if percent == self.shown:
            return
        self.shown = percent
        filled = WIDTH * percent // 100
        bar = "#" * filled + "." * (WIDTH - filled)
        elapsed = time.monotonic() - self.started
        self.stream.write(f"\r{self.label} [{bar}] {percent:3d}%  {elapsed:.0f} s")
        self.stream.flush()

    def close(self) -> None:
        if self.shown >= 0:
            self.stream.write("\r\x1b[2K")  # back to the start of the line, and clear it
            self.stream.flush()

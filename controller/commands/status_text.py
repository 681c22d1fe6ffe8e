"""Words for `controller status` and its monitoring line: durations and the batch queue."""

from __future__ import annotations


def queue_text(queue: dict | None) -> str:
    """The batch queue in words: `3 jobs pending (5 slots), 1 running, oldest waited 4m`."""
    if not queue:
        return "? (no queue reading yet)"
    text = (
        f"{plural(queue.get('pending_jobs', 0), 'job')} pending "
        f"({plural(queue.get('pending_slots', 0), 'slot')}), "
        f"{queue.get('running_jobs', 0)} running"
    )
    if queue.get("pending_jobs"):
        text += f", oldest waited {ago(queue.get('oldest_pending_seconds'))}"
    return text


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = max(0, round(seconds))
    if s < 90:
        return f"{s}s"
    m = round(s / 60)
    if m < 90:
        return f"{m}m"
    h, m = divmod(m, 60)
    return f"{h}h {m}m" if h < 48 else f"{h // 24}d {h % 24}h"

"""renderfarm.conf: GBrowse's format, and the atomic replace every writer of it uses.

GBrowse reads the file on each graceful reload, so it must never see half of it: the text goes to
a temporary file in the same directory, is fsynced, then renamed over the old one. An unchanged
text is not rewritten, so callers reload only when the set of slaves really changed.
Used by the RenderfarmWriter actor and by `controller teardown`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

EMPTY = "[GENERAL]\nrenderfarm = 0\nremote renderer =\n"


def render_renderfarm(urls: Iterable[str]) -> str:
    """The file listing `urls` in the given order, one tab-indented URL a line.

    With no URL: `renderfarm = 0` and an empty `remote renderer`, as ../shared/SPEC.md says.
    """
    urls = list(urls)
    if not urls:
        return EMPTY
    return "[GENERAL]\nrenderfarm = 1\nremote renderer =\n" + "".join(f"\t{u}\n" for u in urls)


def write_atomic(path: str | os.PathLike[str], text: str) -> bool:
    """Replace the file with `text` (write, fsync, rename); False when it already held `text`.

    A new file is world-readable (0644) so Apache can read it; an existing file keeps its mode
    and, when we run as root, its owner. Raises OSError when the directory is not writable.
    """
    target = Path(path)
    try:
        if target.read_text(encoding="utf-8") == text:
            return False
        old = target.stat()
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(old.st_mode) if old else 0o644)
        if old and os.geteuid() == 0:
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return True


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse a directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""Debian's headless Chromium, kept on loopback: the status page's DOM and screenshots.

Chromium resolves no name but 127.0.0.1 and makes no background connection; callers run it
inside the loopback-only network namespace as well.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class ChromiumMissing(RuntimeError):
    """No Chromium binary on PATH."""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise ChromiumMissing("Chromium is not installed: apt-get install chromium (Debian package)")


def chromium_command(
    binary: str, profile: Path, url: str, *action: str, height: int | str = 900
) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        f"--window-size=1280,{height}",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        *action,
        url,
    ]


def screenshot(url: str, out: Path, work: Path, *, height: int = 900, timeout: float = 60) -> None:
    """A PNG of the page at `url` once its scripts ran; raises with Chromium's log if it fails."""
    log = work / "chromium-shot.log"
    command = chromium_command(
        chromium_binary(), work / "profile-shot", url, f"--screenshot={out}", height=height
    )
    with log.open("wb") as stderr:
        code = subprocess.run(
            command, stdout=subprocess.DEVNULL, stderr=stderr, timeout=timeout, check=False
        ).returncode
    if code != 0 or not out.exists():
        raise RuntimeError(f"chromium exited {code}:\n{log.read_text(errors='replace')[-3000:]}")

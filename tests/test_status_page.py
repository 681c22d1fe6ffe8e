"""The status page in Debian's headless Chromium: charts drawn, tables filled, no script error.

The Stats app serves a FleetState fed with four synthetic hours; Chromium loads the page twice
(once dumping the DOM after the page's JavaScript ran, once taking a screenshot). The page sets
`data-rendered` on <html> after each render and its window.onerror handler writes any script
error into the DOM (`data-js-error`, #js-errors), so the DOM dump shows both.
Run inside `unshare --net` like every socket test; Chromium is also told to resolve no name
but 127.0.0.1 and to make no background connections.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controller.status.fleetstate import FleetState
from controller.status.metrics import Metrics
from controller.status.stats import StatsServer, create_app
from tests import synthetic_cluster, synthetic_fleet
from tests.harness.chromium import ChromiumMissing
from tests.harness.chromium import chromium_binary as find_chromium
from tests.harness.chromium import chromium_command as loopback_chromium

SCREENSHOT_COPY = os.environ.get("STATUS_PAGE_SCREENSHOT", "")  # e.g. docs/status-page.png
WINDOW_HEIGHT = os.environ.get("STATUS_PAGE_HEIGHT", "900")


def chromium_binary() -> str:
    try:
        return find_chromium()
    except ChromiumMissing as exc:
        pytest.fail(str(exc))


def chromium_command(binary: str, profile: Path, url: str, *action: str) -> list[str]:
    return loopback_chromium(binary, profile, url, *action, height=WINDOW_HEIGHT)


async def run_chromium(command: list[str], out: Path, log: Path, timeout: float = 60.0) -> None:
    """Run to completion with stdout into `out` and stderr into `log`; fail with the log."""
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=stdout, stderr=stderr, start_new_session=True
        )
        try:
            async with asyncio.timeout(timeout):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0, f"chromium exited {code}:\n{log.read_text(errors='replace')[-3000:]}"


@asynccontextmanager
async def serving(story, end: float, extra: dict):
    """The page's URL, served from a FleetState that folded `story(wall_start)`."""
    wall_now = time.time()
    state = FleetState()
    for msg in story(wall_start=wall_now - end):
        state.apply(msg)
    clock = lambda: end + 1.0  # noqa: E731 - the loop time "now" of the story
    app = create_app(state, Metrics(state, clock), clock=clock, extra=extra)
    server = StatsServer(app)
    await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}/"
    finally:
        await server.stop()


@pytest.fixture
async def page_url():
    extra = {"fleet": "gbrowse", "max_cost_per_hour": 0.25}
    async with serving(synthetic_fleet.events, synthetic_fleet.END, extra) as url:
        yield url


@pytest.fixture
async def cluster_page_url():
    extra = {"fleet": "segway", "cluster": "small", "max_cost_per_hour": None}
    async with serving(synthetic_cluster.events, synthetic_cluster.END, extra) as url:
        yield url


async def test_page_draws_charts_and_tables_without_script_errors(page_url, tmp_path):
    binary = chromium_binary()
    dom_file = tmp_path / "dom.html"
    command = chromium_command(binary, tmp_path / "profile-dom", page_url, "--dump-dom")
    await run_chromium(command, dom_file, tmp_path / "chromium-dom.log")
    dom = dom_file.read_text()

    assert "data-js-error" not in dom, _js_errors(dom)
    assert re.search(r'<html[^>]* data-rendered="\d+"', dom), "the page never rendered /status"
    for chart in ("chart-load", "chart-fleet", "chart-cost"):
        svg = re.search(rf'<svg id="{chart}".*?</svg>', dom, re.S)
        assert svg, f"{chart} missing"
        lines = re.findall(r'<path class="series" d="M[^"]{200,}"', svg.group(0))
        assert lines, f"{chart} has no drawn series"
        assert "no data yet" not in svg.group(0)
    assert dom.count('<path class="series"') >= 4  # load, ready, desired, cost
    # Tables: every slave of the story's end, and the newest decision's reason.
    assert re.search(r"<td>i-0+[0-9a-f]+</td><td>10\.0\.1\.\d+</td>", dom)
    assert "table band" in dom and "no decision yet" not in dom
    assert "all actors running" in dom
    assert "cannot read /status" not in dom
    assert ">req/s<" in dom and ">slaves<" in dom and "jobs pending" not in dom


async def test_cluster_page_speaks_of_jobs_and_nodes(cluster_page_url, tmp_path):
    dom_file = tmp_path / "dom.html"
    command = chromium_command(
        chromium_binary(), tmp_path / "profile-dom", cluster_page_url, "--dump-dom"
    )
    await run_chromium(command, dom_file, tmp_path / "chromium-dom.log")
    dom = dom_file.read_text()

    assert "data-js-error" not in dom, _js_errors(dom)
    assert re.search(r'<html[^>]* data-rendered="\d+"', dom), "the page never rendered /status"
    assert "segway · cluster small" in dom
    for words in ("jobs pending", "node band", "queue sensor", "pending jobs", "running jobs"):
        assert f">{words}<" in dom, words
    assert '<h2 data-word="members">nodes</h2>' in dom
    assert '<th data-word="decisionLoad">pending slots</th>' in dom
    text = re.sub(r"<[^>]*>", " ", dom)  # what a person reads, not ids
    assert "req/s" not in text and "slave" not in text, text
    assert re.search(r'id="t-pending">\d+ setting up · \d+ booting · \d+ draining<', dom)
    chart = re.search(r'<svg id="chart-load".*?</svg>', dom, re.S).group(0)
    assert len(re.findall(r'<path class="series" d="M[^"]{100,}"', chart)) >= 2  # pending, running
    assert re.search(r"<td>i-0+[0-9a-f]+</td><td>127\.0\.20\.\d+</td>", dom)


async def test_page_screenshot(page_url, tmp_path):
    shot = tmp_path / "status-page.png"
    command = chromium_command(
        chromium_binary(), tmp_path / "profile-shot", page_url, f"--screenshot={shot}"
    )
    await run_chromium(command, tmp_path / "chromium-shot.out", tmp_path / "chromium-shot.log")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a blank 1280x900 page compresses to a few kB
    if SCREENSHOT_COPY:
        Path(SCREENSHOT_COPY).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT_COPY)


def _js_errors(dom: str) -> str:
    match = re.search(r'<div id="js-errors"[^>]*>(.*?)</div>', dom, re.S)
    return "script errors on the page: " + (match.group(1) if match else "(see DOM)")

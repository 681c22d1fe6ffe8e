"""`controller status`: a terminal summary of a running controller, read from GET /status.

The summary speaks of load (req/s) and slaves for the render farm, of jobs and nodes for a batch
cluster (`run --cluster`, the document's `mode`). `--json` prints the document itself;
`--nagios` one line and a monitoring check's exit code (controller.commands.status_check).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request

from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNREACHABLE
from controller.commands.status_check import check, unknown_line
from controller.commands.status_text import ago, queue_text

DEFAULT_URL = "http://127.0.0.1:8990"
TIMEOUT_SECONDS = 10.0


def status_command(
    url: str | None = None,
    config_path: str | None = None,
    *,
    as_json: bool = False,
    nagios: bool = False,
) -> int:
    """Print the summary (or with `as_json` the endpoint's JSON) and return 0; 1 with one line
    if the endpoint cannot be read, 2 if the config cannot. With `nagios`: one status line and
    a monitoring check's exit code instead (controller.commands.status_check)."""
    try:
        url, token = endpoint(url, config_path)
        doc = fetch_status(url, token)
    except BadConfig as exc:
        if nagios:
            return unknown(exc.lines[0])
        for line in exc.lines:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except StatusUnavailable as exc:
        if nagios:
            return unknown(str(exc))
        print(f"controller status: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if nagios:
        code, line = check(doc)
        print(line)
        return code
    if as_json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    sys.stdout.write(render(doc))
    return EXIT_OK


def unknown(reason: str) -> int:
    code, line = unknown_line(reason)
    print(line)
    return code


class BadConfig(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self.lines = lines


def endpoint(url: str | None, config_path: str | None) -> tuple[str, str]:
    """The base URL and bearer token: `--url`, else the config's [stats] listen; the token
    from the config. BadConfig when the config is unusable, StatusUnavailable when it serves
    no status."""
    token = ""
    if config_path:
        from controller.config.reader import ConfigError, load_config
        from controller.status.stats import StatsError, load_token

        try:
            config = load_config(config_path)
            token = load_token(config.stats)
        except ConfigError as exc:
            raise BadConfig(list(exc.errors)) from None
        except StatsError as exc:
            raise BadConfig([f"{config_path}: {exc}"]) from None
        if url is None:
            if not config.stats.listen:
                raise StatusUnavailable(
                    f"{config_path}: [stats] listen is empty, so the controller serves no "
                    "status; set it, or give --url"
                )
            url = listen_url(config.stats.listen)
    return base_url(url or DEFAULT_URL), token


def base_url(url: str) -> str:
    """The endpoint's base URL: `--url` may name the base or its `/status` page itself, and may
    be `host:port` as in `[stats] listen`."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url.removesuffix("/status").rstrip("/") if url.endswith("/status") else url


def listen_url(listen: str) -> str:
    """A URL to reach `host:port`; a wildcard bind is reached on loopback."""
    host, port = listen.rsplit(":", 1)
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class StatusUnavailable(Exception):
    pass


def fetch_status(url: str, token: str = "") -> dict:
    try:
        request = urllib.request.Request(f"{url}/status", headers={"Accept": "application/json"})
    except ValueError as exc:  # not a URL at all
        raise StatusUnavailable(f"--url {url}: {exc}") from None
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # No proxy: the endpoint is local, and a proxy must never see the token.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise StatusUnavailable(
                f"{url}/status wants a token: give the config with -c (its [stats] token "
                "or token_file)"
            ) from None
        raise StatusUnavailable(f"{url}/status answered HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise StatusUnavailable(
            f"cannot reach {url} ({reason}); is the controller running, and is this its "
            "[stats] listen address?"
        ) from None
    except (OSError, ValueError) as exc:
        raise StatusUnavailable(f"cannot read {url}/status: {exc}") from None


def render(doc: dict) -> str:
    now = doc.get("now") or time.time()
    cluster = doc.get("mode") == "cluster"
    lines = []
    actors = doc.get("actors") or {}
    failing = [name for name, a in actors.items() if a.get("state") != "running"]
    health = (
        "all actors running"
        if actors and not failing
        else ("NOT RUNNING: " + ", ".join(failing) if failing else "no actor has reported yet")
    )
    title = f"controller {doc.get('fleet', '')}".rstrip()
    if doc.get("cluster"):
        title += f", cluster {doc['cluster']}"
    lines.append(f"{title}: {health}{'  [DRY RUN]' if doc.get('dry_run') else ''}")

    sensor = doc.get("sensor") or {}
    if sensor.get("ok", True):
        sensor_text = "sensor ok"
    else:
        since = sensor.get("since")
        sensor_text = f"SENSOR LOST {ago(now - since) if since else ''} ago: {sensor.get('reason')}"
    if cluster:
        lines.append(f"queue    {queue_text(doc.get('queue'))}   {sensor_text}")
    else:
        load, window = doc.get("load"), doc.get("load_window")
        load_text = "?" if load is None else f"{load:.2f} req/s"
        if window is not None:
            load_text += f" (window {window:.2f})"
        lines.append(f"load     {load_text}   {sensor_text}")

    band = doc.get("table_band")
    band_text = f"{band[0]}-{band[1]}" if band else "?"
    desired = doc.get("desired")
    desired_text = "?" if desired is None else desired
    if cluster:
        nodes = doc.get("nodes") or {}
        lines.append(
            f"nodes    band {band_text}   desired {desired_text}   ready {doc.get('ready', 0)}   "
            f"setting up {nodes.get('setting_up', 0)}   booting {nodes.get('booting', 0)}   "
            f"draining {nodes.get('draining', 0)}   requests {doc.get('pending_requests', 0)}"
        )
    else:
        lines.append(
            f"fleet    band {band_text}   desired {desired_text}   "
            f"ready {doc.get('ready', 0)}   pending {doc.get('pending_requests', 0)}"
        )
    cap = doc.get("max_cost_per_hour")
    cost = f"${doc.get('cost_per_hour', 0.0):.3f}/h" + (f" (cap ${cap:.3f}/h)" if cap else "")
    lines.append(
        f"cost     {cost}   spent ${doc.get('spend', 0.0):.2f} in {ago(doc.get('uptime'))}"
    )

    lines.append("actors")
    for name, a in actors.items():
        extra = f", {a['restarts']} restarts" if a.get("restarts") else ""
        error = f": {a['error']}" if a.get("error") and a.get("state") != "running" else ""
        lines.append(f"  {name:<20} {a.get('state')}{extra}{error}")
    members = doc.get("slaves") or []
    lines.append(f"{'nodes' if cluster else 'slaves':<8} {len(members)}")
    for s in members:
        since = f"since {ago(now - s['since'])}" if s.get("since") else ""
        health_text = "healthy" if s.get("healthy") else "not healthy"
        lines.append(
            f"  {s.get('instance_id', '?'):<20} {s.get('address') or '-':<15} "
            f"{s.get('state', '?'):<12} {health_text:<11} {since}".rstrip()
        )
    decisions = doc.get("decisions") or []
    if decisions:
        d = decisions[0]
        lines.append(f"decided  {ago(now - d['at'])} ago: {d.get('reason', '')}")
    error = doc.get("last_error")
    if error:
        lines.append(
            f"ec2      last error {ago(now - error['at'])} ago: {error['operation']} "
            f"{error['code']} ({error['kind']})"
        )
    return "\n".join(lines) + "\n"

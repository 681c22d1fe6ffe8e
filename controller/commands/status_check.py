"""`controller status --nagios`: the /status document judged as a monitoring check.

One line on stdout and the exit code of a Nagios plugin, which Icinga, Sensu, Zabbix and
Prometheus' script exporters read too:

  0 OK        every actor runs, the sensor answers, the fleet is within its band
  1 WARNING   an actor is starting or restarting; the sensor has been lost for less than
              SENSOR_CRITICAL_SECONDS; fewer ready than the band's minimum, with nothing
              booting or requested to make up the difference; cost at the cap
  2 CRITICAL  an actor failed, stopped or is stopping; the sensor lost for longer
  3 UNKNOWN   the endpoint cannot be read (or the config naming it), or no actor reported yet

The line is `CONTROLLER STATE - what is wrong; the fleet in words | perfdata`, the plugin
guidelines' shape, so the numbers can be graphed. Pure: no I/O, the document's own `now`.
"""

from __future__ import annotations

from controller.commands.status_text import ago, queue_text

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# A lost sensor holds the fleet: fine for a blip, a problem once it lasts.
SENSOR_CRITICAL_SECONDS = 300.0
_DOWN_STATES = frozenset({"failed", "stopped", "stopping"})


def unknown_line(reason: str) -> tuple[int, str]:
    return UNKNOWN, f"CONTROLLER UNKNOWN - {_one_line(reason)}"


def check(doc: dict) -> tuple[int, str]:
    """(exit code, status line) for a /status document."""
    problems = [*_actor_problems(doc), *_sensor_problems(doc), *_fleet_problems(doc)]
    code = max((level for level, _ in problems), default=OK)
    words = [text for level, text in sorted(problems, key=lambda p: -p[0])]
    words.append(_summary(doc))
    line = f"CONTROLLER {NAMES[code]} - " + "; ".join(_one_line(w) for w in words)
    perf = _perfdata(doc)
    return code, f"{line} | {perf}" if perf else line


def _actor_problems(doc: dict) -> list[tuple[int, str]]:
    actors = doc.get("actors") or {}
    if not actors:
        return [(UNKNOWN, "no actor has reported yet")]
    problems = []
    for name, actor in sorted(actors.items()):
        state = actor.get("state")
        if state == "running":
            continue
        error = f" ({actor['error']})" if actor.get("error") else ""
        level = CRITICAL if state in _DOWN_STATES else WARNING
        problems.append((level, f"actor {name} {state}{error}"))
    return problems


def _sensor_problems(doc: dict) -> list[tuple[int, str]]:
    sensor = doc.get("sensor") or {}
    if sensor.get("ok", True):
        return []
    since = sensor.get("since")
    lost_for = None if since is None or doc.get("now") is None else doc["now"] - since
    level = WARNING if lost_for is not None and lost_for < SENSOR_CRITICAL_SECONDS else CRITICAL
    what = "queue sensor" if doc.get("mode") == "cluster" else "load sensor"
    return [(level, f"{what} lost for {ago(lost_for)}: {sensor.get('reason', '')}")]


def _fleet_problems(doc: dict) -> list[tuple[int, str]]:
    problems = []
    band, ready = doc.get("table_band"), doc.get("ready", 0)
    members = "nodes" if doc.get("mode") == "cluster" else "slaves"
    # Every scale-up passes below the band's min while its instances boot: only a shortfall
    # that nothing launched or booting will fill is a problem (capacity, budget, permissions).
    coming = _coming(doc)
    if band and ready + coming < band[0]:
        problems.append(
            (
                WARNING,
                f"{ready} ready and {coming} coming, below the band's minimum of "
                f"{band[0]} {members}",
            )
        )
    cap, cost = doc.get("max_cost_per_hour"), doc.get("cost_per_hour", 0.0)
    if cap and cost >= cap:
        problems.append((WARNING, f"cost ${cost:.3f}/h at the cap ${cap:.3f}/h"))
    return problems


def _coming(doc: dict) -> int:
    """Instances on their way to ready: launched and not yet healthy, not leaving; and open
    spot requests."""
    leaving = ("draining", "terminating", "gone")
    members = doc.get("slaves") or ()
    on_the_way = sum(1 for m in members if not m.get("healthy") and m.get("state") not in leaving)
    return on_the_way + int(doc.get("pending_requests") or 0)


def _summary(doc: dict) -> str:
    name = doc.get("fleet") or "controller"
    if doc.get("cluster"):
        name += f" cluster {doc['cluster']}"
    desired = doc.get("desired")
    fleet = f"desired {'?' if desired is None else desired}, ready {doc.get('ready', 0)}"
    cost = f"${doc.get('cost_per_hour', 0.0):.3f}/h"
    if doc.get("mode") == "cluster":
        return f"{name}: {queue_text(doc.get('queue'))}; nodes {fleet}; {cost}"
    load = doc.get("load")
    load_text = "?" if load is None else f"{load:.2f}"
    return f"{name}: load {load_text} req/s; slaves {fleet}; {cost}"


def _perfdata(doc: dict) -> str:
    values: dict[str, object] = {}
    if doc.get("mode") == "cluster":
        queue = doc.get("queue") or {}
        for key in ("pending_jobs", "pending_slots", "running_jobs"):
            values[key] = queue.get(key)
        oldest = queue.get("oldest_pending_seconds")
        values["oldest_pending"] = None if oldest is None else f"{_perf(float(oldest))}s"
    else:
        values["load"] = doc.get("load")
    values["desired"] = doc.get("desired")
    values["ready"] = doc.get("ready")
    values["cost_per_hour"] = doc.get("cost_per_hour")
    return " ".join(f"{key}={_perf(value)}" for key, value in values.items() if value is not None)


def _perf(value: object) -> str:
    """Plain decimals: perfdata takes no exponent (and 0.6000000000000001 helps nobody)."""
    if not isinstance(value, float):
        return str(value)
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


def _one_line(text: str) -> str:
    """Nagios reads the first line only, and `|` starts the perfdata."""
    return " ".join(str(text).split()).replace("|", "/")

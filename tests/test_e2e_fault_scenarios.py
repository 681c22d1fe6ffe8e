"""Fault scenarios end to end: the real `controller run` against moto behind the fault proxy, a
real Apache with mod_status and the render farm stand-in (tests/harness/fault_scenarios.py).

Every scenario ends on the same invariants, watched from outside while it runs
(tests/harness/fleet_watch.py): after the teardown nothing tagged with the fleet is left
(instances, spot requests, security groups, volumes); there are never more instances alive than
the band's max plus those draining; renderfarm.conf never lists an instance the controller
terminated, and drops one EC2 reclaimed within seconds. Every run also ends on a secret scan
(tests/harness/scenario_run.py): the AWS secret key and session token in the controller's
environment and the stats token in its config appear nowhere in its argv, stdout/stderr,
--logfile, /status or /metrics. The scenarios are in tests/harness/fault_scenarios.py,
renderfarm_faults.py and fleet_scenarios.py. The durations here are short; bench/faults.py runs
the same scenarios for minutes and prints their figures.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from controller.gbrowse.renderfarm import render_renderfarm
from tests.harness import fault_scenarios as scenarios
from tests.harness import fleet_scenarios, renderfarm_faults
from tests.harness.e2e import FLEET
from tests.harness.fleet_watch import FleetWatch
from tests.harness.net import free_port
from tests.harness.scenario_run import SECRET_KEY, STATS_TOKEN, Figures, Rig, Run


@pytest.fixture
def rig(tmp_path, moto_ec2, fault_proxy, apache, render_farm) -> Rig:
    return Rig(moto_ec2, fault_proxy, apache, render_farm, tmp_path)


class StatusServer:
    """A /status that always says the same, for testing the watcher alone."""

    def __init__(self, document: dict) -> None:
        body = json.dumps(document).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def assert_clean(figures: Figures) -> None:
    print(figures)  # the figures, for `pytest -s`
    assert figures.exit_code == 0, figures
    assert figures.violations == [], figures.violations
    assert not any(figures.left.values()), f"left after teardown: {figures.left}"


@pytest.mark.parametrize("kind", ["throttling", "server_errors"])
def test_a_share_of_ec2_calls_failing_neither_leaks_nor_stalls(rig, kind):
    figures = scenarios.ec2_storm(rig, kind, seconds=8)
    assert_clean(figures)
    assert figures.injected > 0 and figures.retries > 0, figures
    assert figures.notes["actor_restarts"] == 0, figures.notes
    assert figures.launched == 4  # three, and the dead one's replacement: no duplicate


def test_ec2_endpoint_down_holds_the_fleet_then_replaces_the_dead_slave(rig):
    figures = scenarios.ec2_storm(rig, "endpoint_down", seconds=8)
    assert_clean(figures)
    assert figures.surfaced > 0
    assert figures.launched == 4


def test_latency_on_every_ec2_call(rig):
    figures = scenarios.ec2_storm(rig, "latency", seconds=6, latency=2.0)
    assert_clean(figures)
    assert figures.injected == 0 and figures.launched == 4


def test_spot_interruption_of_one_slave_then_of_all(rig):
    figures = scenarios.interruptions(rig)
    assert_clean(figures)
    assert figures.launched == 3 + 1 + 3


def test_apache_down_garbage_and_restart_hold_the_fleet(rig):
    figures = scenarios.apache_faults(rig, seconds=5)
    assert_clean(figures)
    assert figures.launched == 2


def test_a_slave_that_never_answers_is_unlisted_and_replaced(rig):
    figures = scenarios.hung_slave(rig)
    assert_clean(figures)
    assert figures.launched == 3


def test_kill_9_during_scale_out_scale_in_and_teardown_then_restart(rig):
    figures = scenarios.kill_storm(rig, rounds=4, seed=3)
    assert_clean(figures)
    assert len(figures.notes["kills"]) == 4


def test_renderfarm_directory_read_only_keeps_the_old_file_and_the_fleet(rig):
    figures = scenarios.renderfarm_read_only(rig, seconds=5)
    assert_clean(figures)
    assert figures.launched == 3


def test_a_slave_lost_while_renderfarm_is_read_only_is_not_terminated_while_listed(rig):
    figures = scenarios.lost_slave_read_only(rig, seconds=20)
    assert_clean(figures)
    assert figures.launched == 3  # the dead one held, its one replacement


def test_renderfarm_directory_full_keeps_the_old_file_and_the_fleet(rig):
    """A real full file system (a tmpfs of 16 pages, filled), not a permission."""
    figures = renderfarm_faults.renderfarm_full(rig, seconds=5)
    assert_clean(figures)
    assert figures.launched == 3
    assert figures.notes["filled bytes"] > 0


def test_teardown_with_renderfarm_read_only_terminates_anyway_and_says_so(rig):
    """The money rule: instances that would bill on are ended although the file still lists
    them; one error names the stale file, and the process exits 1."""
    figures = renderfarm_faults.teardown_read_only(rig)
    print(figures)
    assert figures.exit_code == 1
    assert not any(figures.left.values()), figures.left
    assert figures.notes["file intact"] is True
    assert figures.notes["not_cleared errors"] == 1
    listed = figures.notes["listed"]
    assert len(listed) == 2
    # what the watcher sees is the listed slaves terminated, and nothing else
    assert figures.violations, "the watcher saw no terminated slave listed"
    assert all(any(url in v for url in listed) for v in figures.violations), figures.violations


def test_no_capacity_for_the_first_type_falls_back_then_returns_to_it(rig):
    figures = fleet_scenarios.capacity_fallback(rig, cooldown=6.0)
    assert_clean(figures)
    assert figures.launched == 5  # three, and two replacements
    assert figures.notes["m5.large asked"] == 3  # refused, refused after its cooldown, launched


@pytest.mark.parametrize("ssh_key", [False, True], ids=["no_ssh_key", "ssh_key"])
def test_the_slaves_group_admits_exactly_the_master(rig, ssh_key):
    figures = fleet_scenarios.group_ingress(rig, ssh_key=ssh_key)
    assert_clean(figures)
    port = rig.render_farm.port
    wanted = [("tcp", port, port, "127.0.0.1/32")]
    if ssh_key:
        wanted = sorted([*wanted, ("tcp", 22, 22, "127.0.0.1/32")])
    assert figures.notes["ingress"] == wanted
    assert figures.notes["slaves in it"] is True


def test_the_secret_scan_finds_a_secret_where_it_shows(rig):
    """The scan every run ends with can fail: a secret written to the controller's logfile, or
    present in a page, is reported."""
    run = Run(rig, "scan", "[[2.0, 1, 1]]")
    try:
        run.start()
        run.wait_converged(1)
        assert run.secrets_seen({"/status": run.stats("/status")}) == []
        with open(run.logfile, "a") as log:
            log.write(f'{{"event": "leak", "key": "{SECRET_KEY}"}}\n')
        seen = run.secrets_seen({"/metrics": f"x {STATS_TOKEN}"})
        assert seen == [
            "the stats token appears in the controller's /metrics",
            "the AWS secret key appears in the controller's --logfile",
        ]
    finally:
        run.close()


def test_sighup_storm_during_scale_out(rig):
    figures = scenarios.sighup_storm(rig, seconds=4)
    assert_clean(figures)
    assert figures.launched == 3, "a reload launched again"
    assert figures.notes["reloaded"] > 0 and figures.notes["rejected"] == 0, figures.notes
    assert figures.notes["actor_restarts"] == 0


def test_the_watch_sees_a_listed_slave_terminated_and_a_fleet_above_its_band(
    tmp_path, moto_ec2, fault_proxy
):
    """The invariants can fail: the watcher, on its own, against moto and a fixed /status."""
    ec2 = moto_ec2.client()
    launched = ec2.run_instances(
        ImageId="ami-12345678",
        InstanceType="m5.large",
        MinCount=2,
        MaxCount=2,
        SubnetId=moto_ec2.subnet_id,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "controller:fleet", "Value": FLEET}]}
        ],
    )["Instances"]
    renderfarm = tmp_path / "renderfarm.conf"
    urls = [f"http://{i['PrivateIpAddress']}:8101" for i in launched]
    renderfarm.write_text(render_renderfarm(urls))
    with StatusServer({"table_band": [0, 1], "slaves": []}) as stats_url:
        proxy_ec2 = moto_ec2.client(endpoint_url=fault_proxy.endpoint_url)
        watch = FleetWatch(
            ec2=ec2,
            renderfarm=renderfarm,
            stats_url=stats_url,
            terminated_by_controller=lambda: {
                i for ids in fault_proxy.instance_ids("TerminateInstances") for i in ids
            },
            patience=0.0,
        )
        fault_proxy.on_request = watch.before_call
        watch.look()
        watch.look()  # two alive, band max 1, nothing draining, past the patience
        proxy_ec2.terminate_instances(InstanceIds=[launched[0]["InstanceId"]])
        watch.look()  # and it stays listed
    text = "\n".join(watch.violations)
    assert "above the cap 1" in text, text
    assert f"TerminateInstances {launched[0]['InstanceId']} while renderfarm.conf lists" in text
    assert "after the controller terminated" in text
    assert watch.leftovers()["instances"] == 1


def test_sigterm_teardown_through_a_throttled_terminate_ends_every_instance(rig):
    figures = scenarios.teardown_under_fault(rig, "throttling", terminate_failures=2)
    print(figures)
    assert figures.left["instances"] == 0 or figures.exit_code != 0, "a leak reported as success"
    assert_clean(figures)


def test_the_proxy_fails_the_stated_share_of_every_action_and_counts_retries(moto_ec2, fault_proxy):
    ec2 = moto_ec2.client(endpoint_url=fault_proxy.endpoint_url)  # one attempt: errors surface
    fault_proxy.fail("*", "RequestLimitExceeded", "Request limit exceeded.", 503, rate=0.3)
    failed = 0
    for n in range(20):
        try:
            (ec2.describe_instances if n % 2 else ec2.describe_vpcs)()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "RequestLimitExceeded"
            failed += 1
    assert failed == fault_proxy.injected == 6  # 30 % of every run of ten calls
    fault_proxy.heal()
    ec2.describe_instances()
    for _ in range(2):  # a launch sent again with its ClientToken is a retry
        ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, ClientToken="same-launch")
    retrying = moto_ec2.client(
        endpoint_url=fault_proxy.endpoint_url,
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    fault_proxy.fail("DescribeVpcs", "InternalError", "Injected", 500, times=1)
    retrying.describe_vpcs()  # botocore's second attempt gets through
    assert fault_proxy.retries == 2 and fault_proxy.injected == 7

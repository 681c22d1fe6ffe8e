"""`controller teardown` cannot strand a site.

Against moto's EC2 server (directly, through the fault proxy, or a closed port standing for an
endpoint that is down) with a real renderfarm.conf and a reload command that leaves a trace:
a teardown that cannot read the fleet touches nothing; one refuses while a controller of the
fleet runs (a real `controller run`, or any process holding the fleet's lock) unless --force;
--dry-run prints the plan and changes nothing; on a terminal (a pty) it asks first.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.cli import main
from controller.gbrowse.renderfarm import render_renderfarm
from controller.runtime.fleet_lock import FleetBusy, FleetLock
from tests.harness.e2e import Controller, healthy, wait_until
from tests.harness.e2e import write_config as write_e2e_config
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2
from tests.harness.net import free_port
from tests.test_teardown import (
    EMPTY_RENDERFARM,
    FLEET,
    group_ids,
    make_fleet_raw,
    open_spot_request,
    states,
    write_config,
)

LISTED = render_renderfarm(["http://127.0.20.9:8101"])
ANSWER_TIMEOUT = 60.0


class Site:
    """A fleet of two slaves listed in a real renderfarm.conf, and its teardown config."""

    def __init__(self, tmp_path: Path, moto: MotoEc2, endpoint_url: str | None = None) -> None:
        self.ids, self.group = make_fleet_raw(moto, FLEET, 2)
        self.moto = moto
        self.renderfarm = tmp_path / "renderfarm.conf"
        self.renderfarm.write_text(LISTED)
        self.reloads = tmp_path / "reloads"
        self.config = write_config(tmp_path, moto, self.renderfarm)
        if endpoint_url is not None:
            text = self.config.read_text().replace(moto.endpoint_url, endpoint_url)
            self.config.write_text(text)

    def untouched(self) -> bool:
        return (
            self.renderfarm.read_text() == LISTED
            and not self.reloads.exists()
            and states(self.moto, self.ids) == {"running"}
            and self.group in group_ids(self.moto)
        )

    def gone(self) -> bool:
        return (
            self.renderfarm.read_text() == EMPTY_RENDERFARM
            and self.reloads.read_text() == "reloaded\n"
            and states(self.moto, self.ids) == {"terminated"}
            and self.group not in group_ids(self.moto)
        )


def teardown(site: Site, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", "teardown", "-c", str(site.config), *flags],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


# A fleet that cannot be read: nothing is touched


def test_endpoint_down_touches_nothing(
    tmp_path: Path, moto_ec2: MotoEc2, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    site = Site(tmp_path, moto_ec2, endpoint_url=closed)

    code = main(["teardown", "-c", str(site.config)])

    captured = capsys.readouterr()
    assert code == 1
    assert site.untouched()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert f"cannot read fleet {FLEET} from {closed}" in line
    assert "check [aws] endpoint_url" in line and line.endswith("nothing was changed")


def test_no_credentials_touches_nothing(
    tmp_path: Path,
    moto_ec2: MotoEc2,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site = Site(tmp_path, moto_ec2)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EC2_ACCESS_KEY", "EC2_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)

    code = main(["teardown", "-c", str(site.config)])

    captured = capsys.readouterr()
    assert code == 1
    assert site.untouched()
    (line,) = captured.err.splitlines()
    assert "no AWS credentials found" in line and "EC2_ACCESS_KEY" in line
    assert line.endswith("nothing was changed")


def test_refused_describe_touches_nothing(
    tmp_path: Path,
    moto_ec2: MotoEc2,
    fault_proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = Site(tmp_path, moto_ec2, endpoint_url=fault_proxy.endpoint_url)
    fault_proxy.fail("DescribeSecurityGroups", "UnauthorizedOperation", "not allowed")

    code = main(["teardown", "-c", str(site.config)])

    assert code == 1
    assert site.untouched()
    (line,) = capsys.readouterr().err.splitlines()
    assert "UnauthorizedOperation" in line and "controller iam-policy" in line
    assert all(call.startswith("Describe") for call in fault_proxy.calls), fault_proxy.calls


# A controller of the fleet runs: refused, unless --force


def hold_lock(fleet: str = FLEET) -> subprocess.Popen[str]:
    """Another process holding the fleet's lock as `controller run` does, until killed."""
    code = (
        "import sys, time\n"
        "from controller.runtime.fleet_lock import FleetLock\n"
        f"FleetLock({fleet!r}).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    assert holder.stdout is not None
    if holder.stdout.readline() != "held\n":
        holder.stdout.close()
        pytest.fail(f"the lock holder exited {holder.wait()} without the lock")
    return holder


def test_refused_while_the_fleet_is_locked_unless_forced(tmp_path: Path, moto_ec2: MotoEc2) -> None:
    site = Site(tmp_path, moto_ec2)
    holder = hold_lock()
    try:
        refused = teardown(site)
        planned = teardown(site, "--dry-run")
        forced = teardown(site, "--force")
    finally:
        holder.kill()
        holder.wait(timeout=10)
        holder.stdout.close()

    assert refused.returncode == 1
    assert refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert f"a controller of fleet {FLEET} is running (PID {holder.pid}" in line
    assert "stop it first" in line and "--force" in line
    assert planned.returncode == 0, planned.stderr
    assert f"is running (PID {holder.pid}" in planned.stdout
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "going on (--force)" in forced.stdout
    assert site.gone()


def test_a_running_controller_refuses_a_second_and_a_teardown(
    tmp_path, moto_ec2, apache, render_farm
) -> None:
    farm = write_e2e_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 0, 1]]")
    ctl = Controller(farm)
    try:
        wait_until("the controller up", lambda: healthy(farm), 30, ctl)
        assert is_locked("e2e")
        second = subprocess.run(
            [sys.executable, "-m", "controller.cli", "run", "-c", str(farm.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        refused = subprocess.run(
            [sys.executable, "-m", "controller.cli", "teardown", "-c", str(farm.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ctl.proc.poll() is None, ctl.log_text()
        assert ctl.terminate() == 0, ctl.log_text()
    finally:
        ctl.ensure_dead()

    assert second.returncode == 2
    (line,) = second.stderr.splitlines()
    assert f"fleet e2e is already run by PID {ctl.proc.pid}" in line
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert f"a controller of fleet e2e is running (PID {ctl.proc.pid}" in line
    assert not is_locked("e2e")  # freed at exit: a teardown may run now
    after = subprocess.run(
        [sys.executable, "-m", "controller.cli", "teardown", "-c", str(farm.config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert after.returncode == 0, after.stdout + after.stderr


def is_locked(fleet: str) -> bool:
    try:
        with FleetLock(fleet, shared=True):
            return False
    except FleetBusy:
        return True


# --dry-run


def test_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path,
    moto_ec2: MotoEc2,
    fault_proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = Site(tmp_path, moto_ec2, endpoint_url=fault_proxy.endpoint_url)
    request = open_spot_request(moto_ec2, FLEET)
    described = moto_ec2.client().describe_instances(InstanceIds=site.ids)["Reservations"]
    types = {i["InstanceId"]: i["InstanceType"] for r in described for i in r["Instances"]}
    fault_proxy.clear()

    code = main(["teardown", "-c", str(site.config), "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert site.untouched()
    assert all(call.startswith("Describe") for call in fault_proxy.calls), fault_proxy.calls
    lines = out.splitlines()
    assert lines[0] == f"teardown of fleet {FLEET}:"
    assert f"rewrite {site.renderfarm} with no slaves (it lists 1)" in lines[1]
    assert "then reload with `sh -c 'echo reloaded" in lines[1]  # quoted as a shell needs it
    assert "cancel 1 spot request(s):" in out and request in out
    assert "terminate 2 instance(s)" in out
    for instance_id in site.ids:
        assert f"{instance_id} {types[instance_id]} running " in out
    assert f"delete 1 security group(s):\n    {site.group} ({FLEET}-slaves)" in out
    assert lines[-1] == "dry run: nothing was changed"


# On a terminal: the plan, then [y/N]


def on_a_terminal(site: Site, answer: str | None, *flags: str) -> tuple[int, str]:
    """Run the teardown with a pty as stdin and stdout; type `answer` at the prompt (None: expect
    none). The exit code and everything the terminal showed."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "teardown", "-c", str(site.config), *flags],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    try:
        if answer is not None:
            shown = read_until(controller, b"[y/N] ", proc)
            os.write(controller, answer.encode() + b"\n")
        shown += read_until(controller, None, proc)
        return proc.wait(timeout=ANSWER_TIMEOUT), shown.decode(errors="replace")
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_until(fd: int, marker: bytes | None, proc: subprocess.Popen) -> bytes:
    """Read the terminal until `marker` shows (None: until the process closes it)."""
    seen = b""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while marker is None or marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {marker!r} on the terminal; it showed:\n{seen.decode()}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: every holder of the terminal's other end closed it
            chunk = b""
        if not chunk:
            if marker is None:
                return seen
            pytest.fail(f"exited ({proc.wait()}) before {marker!r}; it showed:\n{seen.decode()}")
        seen += chunk
    return seen


def test_on_a_terminal_no_changes_nothing_and_yes_tears_down(
    tmp_path: Path, moto_ec2: MotoEc2
) -> None:
    site = Site(tmp_path, moto_ec2)

    declined, shown = on_a_terminal(site, "n")

    assert declined == 1, shown
    assert site.untouched()
    assert "terminate 2 instance(s)" in shown and f"Tear down fleet {FLEET}? [y/N]" in shown
    assert "teardown cancelled: nothing was changed" in shown

    accepted, shown = on_a_terminal(site, "y")

    assert accepted == 0, shown
    assert site.gone()
    assert "terminating 2 instance(s)" in shown


def test_yes_does_not_ask_on_a_terminal(tmp_path: Path, moto_ec2: MotoEc2) -> None:
    site = Site(tmp_path, moto_ec2)

    code, shown = on_a_terminal(site, None, "--yes")

    assert code == 0, shown
    assert "[y/N]" not in shown
    assert site.gone()


def test_dry_run_of_a_cluster_lists_the_nodes_leaving_grid_engine(
    tmp_path: Path, moto_ec2: MotoEc2, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(
        f"""
[controller]
fleet = "{FLEET}"

[slave]
region = "{moto_ec2.region}"
image_id = "ami-12345678"

[aws]
endpoint_url = "{moto_ec2.endpoint_url}"
max_attempts = 2

[cluster.small]
node_instance_type = "m5.large"
image_id = "ami-12345678"
subnet = "{moto_ec2.subnet_id}"
plugins = ["sge"]

[plugin.sge]
kind = "sge"
sge_root = "{tmp_path}"
"""
    )
    tags = [
        {"Key": "controller:fleet", "Value": FLEET},
        {"Key": "controller:role", "Value": "node"},
    ]
    answer = moto_ec2.client().run_instances(
        ImageId="ami-12345678",
        MinCount=2,
        MaxCount=2,
        SubnetId=moto_ec2.subnet_id,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    nodes = {i["InstanceId"]: i["PrivateIpAddress"] for i in answer["Instances"]}

    code = main(["teardown", "-c", str(config), "--cluster", "small", "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert states(moto_ec2, list(nodes)) == {"running"}
    for instance_id, address in nodes.items():
        host = "ip-" + address.replace(".", "-")
        assert f"sge: take {host} ({instance_id}) out of Grid Engine on the head" in out
    assert "renderfarm.conf" not in out
    assert out.splitlines()[-1] == "dry run: nothing was changed"

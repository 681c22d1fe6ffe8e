"""ClusterNodeSetup against a real OpenSSH sshd on 127.0.20.x, standing in for a booted node.

The sshd runs on this machine, so the "node's" files go to a temp dir through plugin options.
Grid Engine registration is covered in test_grid_engine.py.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.cluster_node_setup import ClusterNodeSetup
from controller.config.reader import parse_config
from controller.config.schema import Config
from controller.messages import (
    ActorStateChanged,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    NodeReady,
    NodeSetupFailed,
    Role,
)
from controller.runtime.bus import Bus
from controller.runtime.supervisor import Runtime
from tests.actor_runner import drain, listen, next_of, running
from tests.harness.net import free_port
from tests.harness.sshd import Sshd


def make_config(tmp: Path, key: Path | str, port: int, plugins: dict | None = None) -> Config:
    if plugins is None:
        plugins = {
            "segway-env": {
                "kind": "profile",
                "path": str(tmp / "profile.d" / "segway.sh"),
                "base": "/segway-build",
                "python_version": "2.6",
            },
            "segway-motd": {
                "kind": "motd",
                "path": str(tmp / "motd.tail"),
                "text": "=== Segway $node_type node $hostname ===",
            },
            "quiet": {"kind": "stop-services", "services": ["no-such-service-xyz"]},
            "extra": {"kind": "commands", "commands": [f"id -un > {tmp}/ran-as"]},
        }
    return parse_config(
        {
            "cluster": {
                "small": {
                    "ssh_key_file": str(key),
                    "ssh_port": port,
                    "plugins": list(plugins),
                },
            },
            "plugin": plugins,
        },
        "test.toml",
    )


def node_up(address: str, n: int = 1) -> InstanceUp:
    return InstanceUp(at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address, role=Role.NODE)


def make_actor(bus: Bus, config: Config, tmp: Path, user: str, **kwargs) -> ClusterNodeSetup:
    kwargs.setdefault("ssh_retry_delays", (0.1, 0.2))
    kwargs.setdefault("ssh_wait_timeout", 20.0)
    kwargs.setdefault("node_state_dir", str(tmp / "node-state"))  # the "node" is this machine
    return ClusterNodeSetup(
        config=config,
        cluster=config.clusters[0],
        bus=bus,
        known_hosts_path=tmp / "state" / "known_hosts",
        ssh_user=user,
        head_host="head",
        **kwargs,
    )


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture
def tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="test-node-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bus() -> Bus:
    return Bus()


async def test_node_is_set_up_over_ssh(sshd_factory: Callable[..., Sshd], tmp: Path, bus: Bus):
    sshd = sshd_factory(address="127.0.20.5")
    config = make_config(tmp, sshd.client_key_path, sshd.port)
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, tmp, sshd.username)):
        bus.publish(node_up("127.0.20.5"))
        ready = await next_of(events, NodeReady, within=20)
        assert (ready.instance_id, ready.address) == ("i-0001", "127.0.20.5")
        assert ready.hostname == "ip-127-0-20-5"

        profile = (tmp / "profile.d" / "segway.sh").read_text()
        assert 'export ARCHHOME="/segway-build/arch/Linux-x86_64"' in profile
        assert "/segway-build/arch/Linux-x86_64/lib/python2.6" in profile
        motd = (tmp / "motd.tail").read_text()
        assert "=== Segway COMPUTE node ip-127-0-20-5 ===" in motd
        assert (tmp / "ran-as").read_text().strip() == sshd.username

        # The host key was trusted on first use and pinned for this instance.
        pinned = (tmp / "state" / "known_hosts").read_text().split()
        assert pinned[0] == f"[127.0.20.5]:{sshd.port}"
        assert " ".join(pinned[1:3]) == " ".join(sshd.host_public_key.split()[:2])
        assert pinned[3] == "i-0001"

        # A repeated InstanceUp for a node that is set up does nothing.
        bus.publish(node_up("127.0.20.5"))
        assert await drain(events, 0.5) == []
    assert motd.count("Segway COMPUTE") == 1


async def test_ssh_wait_retries_until_sshd_appears(tmp: Path, bus: Bus):
    address = "127.0.20.6"
    (tmp / "sshd").mkdir()
    sshd = Sshd(tmp / "sshd", address=address, port=free_port(address))
    config = make_config(tmp, sshd.client_key_path, sshd.port)
    events = listen(bus, NodeReady, NodeSetupFailed)
    try:
        async with running(make_actor(bus, config, tmp, sshd.username)):
            bus.publish(node_up(address))
            await asyncio.sleep(1.0)  # connection refused meanwhile: the node is "booting"
            assert await drain(events, 0) == []
            await asyncio.to_thread(sshd.start)
            ready = await next_of(events, NodeReady, within=20)
            assert ready.hostname == "ip-127-0-20-6"
    finally:
        sshd.stop()


async def test_ssh_gives_up_after_the_wait_timeout(tmp: Path, bus: Bus):
    key = keygen(tmp / "key")
    address = "127.0.20.7"
    config = make_config(tmp, key, free_port(address))  # nothing listens there
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, tmp, "root", ssh_wait_timeout=1.0)):
        bus.publish(node_up(address))
        failed = await next_of(events, NodeSetupFailed, within=10)
    assert failed.step == "ssh"
    assert "no SSH on 127.0.20.7" in failed.reason and "within 1s" in failed.reason


async def test_refused_key_fails_at_once(sshd_factory: Callable[..., Sshd], tmp: Path, bus: Bus):
    sshd = sshd_factory(address="127.0.20.5")
    wrong_key = keygen(tmp / "wrong_key")
    config = make_config(tmp, wrong_key, sshd.port)
    events = listen(bus, NodeReady, NodeSetupFailed)
    # A long SSH wait: an auth failure retried like a refused connection would never end here.
    async with running(make_actor(bus, config, tmp, sshd.username, ssh_wait_timeout=300)):
        bus.publish(node_up("127.0.20.5"))
        failed = await next_of(events, NodeSetupFailed, within=10)
    assert failed.step == "ssh"
    assert f"refused the key {wrong_key}" in failed.reason
    assert "authorized_keys" in failed.reason


async def test_changed_host_key_is_refused_for_the_same_instance(
    sshd_factory: Callable[..., Sshd], tmp: Path, bus: Bus
):
    sshd = sshd_factory(address="127.0.20.5")
    other = keygen(tmp / "other_host_key")
    other_public = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    pins = tmp / "state" / "known_hosts"
    pins.parent.mkdir()
    pins.write_text(f"[127.0.20.5]:{sshd.port} {other_public} i-0001\n")
    config = make_config(tmp, sshd.client_key_path, sshd.port)
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, tmp, sshd.username)):
        bus.publish(node_up("127.0.20.5", n=1))
        failed = await next_of(events, NodeSetupFailed, within=10)
        assert failed.step == "ssh"
        assert "host key other than the one pinned for i-0001" in failed.reason
        assert not (tmp / "ran-as").exists()

        # The same address on a new instance: the old pin goes, the new key is trusted.
        bus.publish(node_up("127.0.20.5", n=2))
        ready = await next_of(events, NodeReady, within=20)
        assert ready.instance_id == "i-0002"
    assert pins.read_text().split()[3] == "i-0002"


async def test_failing_command_names_its_plugin(
    sshd_factory: Callable[..., Sshd], tmp: Path, bus: Bus
):
    sshd = sshd_factory(address="127.0.20.5")
    plugins = {
        "first": {"kind": "commands", "commands": [f"touch {tmp}/first"]},
        "broken": {"kind": "commands", "commands": ["echo fine", "echo oops >&2; exit 3"]},
        "never": {"kind": "commands", "commands": [f"touch {tmp}/never"]},
    }
    config = make_config(tmp, sshd.client_key_path, sshd.port, plugins)
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, tmp, sshd.username)):
        bus.publish(node_up("127.0.20.5"))
        failed = await next_of(events, NodeSetupFailed, within=20)
    assert failed.step == "plugin:broken"
    assert failed.reason == "command 2 of broken exited with 3: oops"
    assert (tmp / "first").exists() and not (tmp / "never").exists()


async def test_nodes_are_set_up_concurrently(
    sshd_factory: Callable[..., Sshd], tmp: Path, bus: Bus
):
    first = sshd_factory(address="127.0.20.5")
    second = sshd_factory(address="127.0.20.8", port=first.port)  # one port, as on EC2
    # Both accept one key: the cluster has one.
    (second.root / "authorized_keys").write_text((first.root / "client_key.pub").read_text())
    # Each setup waits (up to 10 s) until both have started: only concurrent setups pass.
    meet = (
        f"touch {tmp}/arrived.$$; n=0;"
        f" while [ $(ls {tmp} | grep -c '^arrived') -lt 2 ]; do"
        " n=$((n + 1)); if [ $n -gt 100 ]; then exit 1; fi; sleep 0.1; done"
    )
    config = make_config(
        tmp, first.client_key_path, first.port, {"meet": {"kind": "commands", "commands": [meet]}}
    )
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, tmp, first.username, max_concurrent=2)):
        bus.publish(node_up("127.0.20.5", n=1))
        bus.publish(node_up("127.0.20.8", n=2))
        got = [await next_of(events, NodeReady, within=20) for _ in range(2)]
    assert {ready.hostname for ready in got} == {"ip-127-0-20-5", "ip-127-0-20-8"}


async def test_instance_down_cancels_its_setup(tmp: Path, bus: Bus):
    key = keygen(tmp / "key")
    address = "127.0.20.9"
    config = make_config(tmp, key, free_port(address))
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, tmp, "root", ssh_wait_timeout=1.0)):
        bus.publish(node_up(address))
        await asyncio.sleep(0.3)
        bus.publish(
            InstanceDown(
                at=0.0,
                instance_id=InstanceId("i-0001"),
                address=address,
                reason=LostReason.SCALE_IN,
            )
        )
        # Not cancelled, the setup would report its SSH wait timing out after 1 s.
        assert await drain(events, 2.0) == []


async def test_unreadable_key_stops_the_start_with_its_name(tmp: Path, bus: Bus):
    config = make_config(tmp, tmp / "missing_key", 22)
    states: list[ActorStateChanged] = []
    runtime = Runtime(
        [make_actor(bus, config, tmp, "root")], grace_seconds=1, on_state=states.append
    )
    assert await runtime.run_until_stopped() == 1
    failed = [m for m in states if m.state == "failed"]
    assert len(failed) == 1
    assert "cluster.small.ssh_key_file: cannot use" in failed[0].error
    assert "missing_key" in failed[0].error


async def test_bad_plugin_options_stop_the_start_naming_the_key(tmp: Path, bus: Bus):
    config = make_config(tmp, keygen(tmp / "key"), 22, {"env": {"kind": "profile"}})
    states: list[ActorStateChanged] = []
    runtime = Runtime(
        [make_actor(bus, config, tmp, "root")], grace_seconds=1, on_state=states.append
    )
    assert await runtime.run_until_stopped() == 1
    (failed,) = [m for m in states if m.state == "failed"]
    assert "test.toml: plugin.env.base: required for kind 'profile'" in failed.error


def node_down(address: str, reason: LostReason, n: int = 1) -> InstanceDown:
    return InstanceDown(at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address, reason=reason)


async def test_a_node_announced_down_twice_leaves_grid_engine_once(tmp: Path, bus: Bus):
    # Grid Engine's clients are replaced, through the sge plugin's command_prefix, by a recorder
    # that logs each call and fails every call while the file `qmaster-down` exists.
    calls, down = tmp / "calls", tmp / "qmaster-down"
    recorder = f'echo "$*" >> {calls}; [ ! -e {down} ]'
    plugins = {
        "sge": {
            "kind": "sge",
            "sge_root": str(tmp),
            "start_execd": False,
            "command_prefix": ["sh", "-c", recorder, "recorder"],
        }
    }
    config = make_config(tmp, keygen(tmp / "key"), 22, plugins)

    def deregistrations() -> list[str]:
        lines = calls.read_text().splitlines() if calls.exists() else []
        return [line for line in lines if line.startswith("qmod -d all.q@")]

    async def settle() -> None:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not actor._removals:
                return
        raise AssertionError("the deregistrations never finished")

    actor = make_actor(bus, config, tmp, "root")
    async with running(actor):
        # Warned of its interruption: drained (down, out of Grid Engine), then gone (down
        # again). (A scale-in reads qstat first: test_grid_engine.py runs it on the real one.)
        bus.publish(node_down("127.0.20.5", LostReason.INTERRUPTION_WARNING))
        await settle()
        bus.publish(node_down("127.0.20.5", LostReason.INTERRUPTION_WARNING))
        await settle()
        assert deregistrations() == ["qmod -d all.q@ip-127-0-20-5"]
        assert "qconf -de ip-127-0-20-5" in calls.read_text()

        # The head cannot be reached at the drain: the node's second announcement tries again.
        down.touch()
        bus.publish(node_down("127.0.20.6", LostReason.UNREACHABLE, n=2))
        await settle()
        down.unlink()
        bus.publish(node_down("127.0.20.6", LostReason.UNREACHABLE, n=2))
        await settle()
        assert deregistrations()[1:] == ["qmod -d all.q@ip-127-0-20-6"] * 2

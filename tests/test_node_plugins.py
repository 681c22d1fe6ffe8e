"""The [plugin.X] kinds and [volume.X] mounts as commands: what they render, and what the
file-writing ones do when a shell runs them (locally, into a temp dir)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from controller.config.plugins import (
    CommandsPlugin,
    MotdPlugin,
    PluginError,
    ProfilePlugin,
    SgePlugin,
    StopServicesPlugin,
    cluster_plugins,
    parse_plugin,
    sge_plugin,
)
from controller.config.reader import parse_config
from controller.config.schema import PluginSection, VolumeSection
from controller.gridengine.head_motd import write_head_banners
from controller.gridengine.node_plugins import (
    NodeInfo,
    RemoteCommand,
    consumable_line,
    deregister_commands,
    head_commands,
    locked,
    memory_command,
    motd_markers,
    node_memory,
    profile_script,
    register_commands,
    remote_commands,
)
from controller.gridengine.node_volumes import FORMAT_IF_BLANK, device_name, volume_commands

NODE = NodeInfo(instance_id="i-0123", address="10.0.1.23", hostname="ip-10-0-1-23")


def plugin(kind: str, name: str = "p", **options: object):
    return parse_plugin(PluginSection(name=name, kind=kind, options=tuple(options.items())))


def sh(command: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", "-c", command], input=input, capture_output=True, text=True, check=False
    )


def run_all(commands) -> None:
    for command in commands:
        result = sh(command.command, command.input)
        assert result.returncode == 0, f"{command.what}: {result.stderr}"


# profile


def test_profile_puts_the_segway_build_on_the_paths(tmp_path: Path):
    path = tmp_path / "profile.d" / "segway.sh"
    p = plugin("profile", "segway-env", path=str(path), base="/segway-build", python_version="2.6")
    assert isinstance(p, ProfilePlugin)
    run_all(remote_commands(p, NODE))
    assert path.stat().st_mode & 0o777 == 0o644
    env = sh(
        f". {path}; echo $ARCH; echo $ARCHHOME; echo $PATH; echo $PYTHONPATH;"
        " echo $LD_LIBRARY_PATH; echo $HDF5_DIR"
    ).stdout.splitlines()
    home = "/segway-build/arch/Linux-x86_64"
    assert env[0] == "Linux-x86_64"
    assert env[1] == home
    assert env[2].startswith(f"{home}/bin:")
    assert env[3] == f"{home}/lib/python2.6"  # no stray ':' when it was unset
    assert env[4] == f"{home}/lib:{home}/lib64/R/lib"
    assert env[5] == home


def test_profile_options_arch_and_env(tmp_path: Path):
    path = tmp_path / "tools.sh"
    p = plugin("profile", path=str(path), base="/opt/tools", arch="", env=("SEGWAY_CLUSTER=sge",))
    script = profile_script(p)
    assert "ARCH" not in script and "PYTHONPATH" not in script
    run_all(remote_commands(p, NODE))
    out = sh(
        f"LD_LIBRARY_PATH=/x; . {path}; echo $PATH; echo $LD_LIBRARY_PATH; echo $SEGWAY_CLUSTER"
    )
    lines = out.stdout.splitlines()
    assert lines[0].startswith("/opt/tools/bin:")
    assert lines[1] == "/opt/tools/lib:/opt/tools/lib64/R/lib:/x"
    assert lines[2] == "sge"


def test_profile_default_path_is_named_after_the_plugin():
    p = plugin("profile", "segway-env", base="/segway-build")
    assert p.path == "/etc/profile.d/segway-env.sh"
    (command,) = remote_commands(p, NODE)
    assert command.command.endswith('mv -f "$tmp" /etc/profile.d/segway-env.sh')
    assert "tmp=$(mktemp /etc/profile.d/.segway-env.sh.controller-XXXXXX)" in command.command
    assert command.input == profile_script(p)


def test_rewriting_the_profile_replaces_it(tmp_path: Path):
    path = tmp_path / "p.sh"
    path.write_text("old\n")
    run_all(remote_commands(plugin("profile", path=str(path), base="/b"), NODE))
    assert "old" not in path.read_text()
    assert [f.name for f in tmp_path.iterdir()] == ["p.sh"]  # no temp file left


# motd


def test_motd_block_is_appended_once(tmp_path: Path):
    path = tmp_path / "motd.tail"
    path.write_text("Welcome\n")
    p = plugin(
        "motd", "segway-motd", path=str(path), text="=== Segway $node_type node $hostname ===\n"
    )
    assert isinstance(p, MotdPlugin)
    for _ in range(2):
        run_all(remote_commands(p, NODE))
    text = path.read_text()
    assert text.startswith("Welcome\n")
    assert text.count("=== Segway COMPUTE node ip-10-0-1-23 ===") == 1
    begin, end = motd_markers(p)
    assert text.count(begin) == 1 and text.count(end) == 1
    other = plugin("motd", "other", path=str(path), text="second block")
    run_all(remote_commands(other, NODE))
    run_all(remote_commands(p, NODE))
    text = path.read_text()
    assert text.count("Segway COMPUTE") == 1 and text.count("second block") == 1


def test_motd_creates_a_missing_file(tmp_path: Path):
    path = tmp_path / "etc" / "motd.tail"
    run_all(remote_commands(plugin("motd", path=str(path), text="hello $address"), NODE))
    assert "hello 10.0.1.23\n" in path.read_text()


def test_motd_default_path():
    assert plugin("motd", text="x").path == "/etc/motd.tail"


def test_motd_without_text_writes_the_seeds_banner(tmp_path: Path):
    path = tmp_path / "motd.tail"
    p = plugin(
        "motd",
        path=str(path),
        versions=("segway=1.0.2", "genomedata=1.2.2", "segtools=1.1.6"),
        base="/segway-build/arch/Linux-x86_64",
    )
    node = NodeInfo(
        instance_id="i-0123", address="10.0.1.23", hostname="ip-10-0-1-23", cluster="segway"
    )
    run_all(remote_commands(p, node))
    run_all(remote_commands(p, NodeInfo("i-0", "10.0.0.5", "ip-10-0-0-5", "MASTER", "segway")))
    lines = path.read_text().splitlines()
    begin, end = motd_markers(p)
    assert lines[lines.index(begin) + 1 : lines.index(end)] == [
        "",
        "*" * 63,
        "=== segway MASTER node ip-10-0-0-5 ===",
        "segway version: 1.0.2",
        "genomedata version: 1.2.2",
        "segtools version: 1.1.6",
        "Packages installed in /segway-build/arch/Linux-x86_64",
        "*" * 63,
    ]
    assert lines.count(begin) == 1  # the COMPUTE block was replaced
    bare = plugin("motd", path=str(tmp_path / "bare"))
    run_all(remote_commands(bare, NODE))
    assert "=== cluster COMPUTE node ip-10-0-1-23 ===" in (tmp_path / "bare").read_text()


def test_file_plugins_run_twice_at_once_leave_one_copy(tmp_path: Path):
    # A restart during a node's setup may run its commands again while the first run's are
    # still going: each writes through a temp file of its own, and the last rename wins.
    motd = plugin("motd", "m", path=str(tmp_path / "motd.tail"), text="hello $hostname")
    profile = plugin("profile", "e", path=str(tmp_path / "e.sh"), base="/b")
    commands = remote_commands(motd, NODE) + remote_commands(profile, NODE)
    for _ in range(5):
        procs = [
            subprocess.Popen(["sh", "-c", c.command], stdin=subprocess.PIPE, text=True)
            for c in commands * 4
        ]
        for proc, command in zip(procs, commands * 4, strict=True):
            proc.communicate(command.input)
        assert [proc.returncode for proc in procs] == [0] * len(procs)
    assert (tmp_path / "motd.tail").read_text().count("hello ip-10-0-1-23") == 1
    assert (tmp_path / "e.sh").read_text() == profile_script(profile)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["e.sh", "motd.tail"]


# stop-services and commands


def test_stop_services_renders_one_command_each():
    p = plugin("stop-services", services=("apache2", "mysql"))
    assert isinstance(p, StopServicesPlugin)
    commands = remote_commands(p, NODE)
    assert [c.what for c in commands] == ["stop service apache2", "stop service mysql"]
    assert "systemctl stop -- apache2" in commands[0].command
    assert "/etc/init.d/apache2 stop" in commands[0].command


def test_stopping_a_service_the_node_lacks_is_reported_not_failed():
    (command,) = remote_commands(plugin("stop-services", services=("no-such-service-xyz",)), NODE)
    result = sh(command.command)
    assert result.returncode == 0
    assert "no-such-service-xyz: no such service" in result.stdout


def test_commands_are_run_verbatim():
    p = plugin("commands", commands=("echo one", "mkdir -p /tmp/x && echo two"))
    assert isinstance(p, CommandsPlugin)
    assert [c.command for c in remote_commands(p, NODE)] == [
        "echo one",
        "mkdir -p /tmp/x && echo two",
    ]


def test_commands_run_once_per_instance_when_the_node_keeps_state(tmp_path: Path):
    count = tmp_path / "count"
    p = plugin("commands", commands=(f"echo x >> {count} # appends", "exit $(cat flag)"))
    node = NodeInfo("i-0123", "10.0.1.23", "ip-10-0-1-23", state_dir=str(tmp_path / "i-0123"))
    (tmp_path / "i-0123").mkdir()
    first, flaky = remote_commands(p, node)
    for _ in range(3):  # set up again after restarts
        assert sh(first.command).returncode == 0
    assert count.read_text() == "x\n"
    assert "done before" in sh(first.command).stdout
    # A command that failed is run again the next time.
    (tmp_path / "flag").write_text("1")
    assert sh(f"cd {tmp_path} && {flaky.command}").returncode == 1
    (tmp_path / "flag").write_text("0")
    assert sh(f"cd {tmp_path} && {flaky.command}").returncode == 0
    (tmp_path / "flag").write_text("1")
    assert sh(f"cd {tmp_path} && {flaky.command}").returncode == 0  # done: not run again
    # Another instance on the same machine keeps its own markers.
    other = NodeInfo("i-0456", "10.0.1.24", "ip-10-0-1-24", state_dir=str(tmp_path / "i-0456"))
    (tmp_path / "i-0456").mkdir()
    assert sh(remote_commands(p, other)[0].command).returncode == 0
    assert count.read_text() == "x\nx\n"


def test_locked_commands_wait_for_each_other_but_not_for_a_daemon(tmp_path: Path):
    node = NodeInfo("i-0123", "10.0.1.23", "ip-10-0-1-23", state_dir=str(tmp_path / "state"))
    # Not idempotent while it runs: two at once would find the other's directory.
    busy = RemoteCommand(f"mkdir {tmp_path}/busy && sleep 0.2 && rmdir {tmp_path}/busy", "busy")
    command = locked(busy, node).command
    procs = [subprocess.Popen(["sh", "-c", command]) for _ in range(4)]
    assert [proc.wait() for proc in procs] == [0] * 4
    # A daemon started under the lock (sge_execd) does not keep holding it.
    pid = tmp_path / "daemon.pid"
    daemon = locked(RemoteCommand(f"sleep 30 >/dev/null 2>&1 & echo $! > {pid}", "daemon"), node)
    assert sh(daemon.command).returncode == 0
    lock = tmp_path / "state" / "setup.lock"
    try:
        assert sh(f"flock -n {lock} true").returncode == 0
    finally:
        os.kill(int(pid.read_text()), signal.SIGTERM)
    assert locked(busy, NODE) == busy  # no state dir: run as it is


# sge


def test_sge_registration_on_the_head():
    p = plugin("sge", "sge", queue="all.q")
    assert isinstance(p, SgePlugin)
    commands = register_commands(p, "ip-10-0-1-23", "4096M")
    argvs = [c.argv for c in commands]
    assert argvs == [
        ("qconf", "-ah", "ip-10-0-1-23"),
        ("qconf", "-as", "ip-10-0-1-23"),
        ("qconf", "-Ae"),
        ("qconf", "-rattr", "exechost", "complex_values", "mem_requested=4096M", "ip-10-0-1-23"),
        ("qconf", "-aattr", "queue", "hostlist", "ip-10-0-1-23", "all.q"),
        ("qmod", "-e", "all.q@ip-10-0-1-23"),
    ]
    add = commands[2]
    assert "hostname              ip-10-0-1-23\n" in add.file_text
    assert "complex_values        mem_requested=4096M\n" in add.file_text
    assert add.ok_if == ("already exists",)
    assert consumable_line(p) == "mem_requested mem_requested MEMORY <= YES YES 0 0"


def test_sge_head_keeps_no_slots_when_it_is_no_exec_host():
    p = plugin("sge", head_is_exec_host=False, submit_host=False, queue="segway.q")
    assert [c.argv for c in head_commands(p, "master")] == [
        ("qconf", "-mattr", "queue", "slots", "[master=0]", "segway.q"),
        ("qconf", "-aattr", "queue", "hostlist", "master", "segway.q"),
    ]
    assert head_commands(plugin("sge"), "master") == []
    commands = register_commands(p, "ip-10-0-1-23", "1G")
    assert all(c.argv[1] != "-as" for c in commands)
    assert all("master" not in c.argv for c in commands)


def test_sge_deregistration_tolerates_a_host_that_is_gone():
    commands = deregister_commands(plugin("sge"), "ip-10-0-1-23")
    assert [c.argv for c in commands] == [
        ("qmod", "-d", "all.q@ip-10-0-1-23"),
        ("qconf", "-dattr", "queue", "hostlist", "ip-10-0-1-23", "all.q"),
        ("qconf", "-de", "ip-10-0-1-23"),
        ("qconf", "-ds", "ip-10-0-1-23"),
        ("qconf", "-dh", "ip-10-0-1-23"),
    ]
    assert all("does not exist" in c.ok_if for c in commands)


def test_sge_node_side_starts_execd_once():
    p = plugin("sge", sge_root="/opt/sge6", cell="default", write_act_qmaster=True)
    act, execd = remote_commands(p, NODE, head="master")
    assert "export SGE_ROOT=/opt/sge6 SGE_CELL=default" in execd.command
    assert "pgrep -x sge_execd >/dev/null && exit 0; said=$(sge_execd 2>&1)" in execd.command
    assert "sge_execd could not reach the qmaster master" in execd.command  # test_node_side.py
    assert "master" in act.command and "act_qmaster" in act.command
    assert remote_commands(plugin("sge", start_execd=False), NODE, head="m") == []


def test_sge_act_qmaster_is_written(tmp_path: Path):
    p = plugin("sge", sge_root=str(tmp_path), cell="c", write_act_qmaster=True, start_execd=False)
    run_all(remote_commands(p, NODE, head="ip-10-0-0-1"))
    assert (tmp_path / "c" / "common" / "act_qmaster").read_text() == "ip-10-0-0-1\n"


def test_sge_node_memory_from_meminfo():
    p = plugin("sge")
    result = sh(memory_command().command)
    assert result.returncode == 0
    memory = node_memory(p, result.stdout)
    assert memory.endswith("M") and int(memory[:-1]) > 0
    assert node_memory(plugin("sge", node_memory="15G"), "") == "15G"
    with pytest.raises(PluginError, match="cannot read the node's memory"):
        node_memory(p, "")


# option errors


@pytest.mark.parametrize(
    ("kind", "options", "error"),
    [
        ("profile", {}, "plugin.p.base: required"),
        ("profile", {"base": "relative/path"}, "plugin.p.base: expected an absolute path"),
        ("profile", {"base": "/b", "path": "/etc/x;rm -rf /"}, "plugin.p.path: expected an"),
        ("profile", {"base": "/b", "env": ("1BAD=x",)}, 'plugin.p.env: expected "NAME=VALUE"'),
        ("profile", {"base": "/b", "colour": "red"}, "plugin.p.colour: unknown option"),
        ("motd", {"versions": ("segway",)}, 'plugin.p.versions: expected "NAME=VERSION"'),
        ("motd", {"versions": ("a=$(x)",)}, 'plugin.p.versions: expected "NAME=VERSION"'),
        ("stop-services", {}, "plugin.p.services: required"),
        ("stop-services", {"services": ("a b",)}, "plugin.p.services: not a service name"),
        ("commands", {"commands": ()}, "plugin.p.commands: must not be empty"),
        ("commands", {"commands": "echo"}, "plugin.p.commands: expected an array"),
        ("sge", {"head_is_exec_host": "no"}, "plugin.p.head_is_exec_host: expected true or"),
        ("sge", {"node_memory": "lots"}, "plugin.p.node_memory: expected a Grid Engine memory"),
        ("sge", {"queue": "all q"}, "plugin.p.queue: expected a name"),
    ],
)
def test_bad_options_name_the_key(kind, options, error):
    with pytest.raises(PluginError) as info:
        plugin(kind, **options)
    assert error in str(info.value)


def test_cluster_plugins_keep_the_clusters_order():
    config = parse_config(
        {
            "cluster": {
                "small": {"plugins": ["sge", "segway-env", "motd"], "volumes": ["data"]},
            },
            "volume": {"data": {"snapshot_id": "snap-0abc", "mount_path": "/segway-data"}},
            "plugin": {
                "segway-env": {"kind": "profile", "base": "/segway-build"},
                "motd": {"kind": "motd", "text": "hi"},
                "sge": {"kind": "sge", "head_is_exec_host": False},
            },
        },
        "test.toml",
    )
    plugins = cluster_plugins(config, config.clusters[0])
    assert [p.name for p in plugins] == ["sge", "segway-env", "motd"]
    found = sge_plugin(plugins)
    assert found is not None and found.head_is_exec_host is False


def test_cluster_plugins_report_every_bad_plugin():
    config = parse_config(
        {
            "cluster": {"small": {"plugins": ["a", "b"]}},
            "plugin": {"a": {"kind": "profile"}, "b": {"kind": "motd", "colour": "red"}},
        },
        "test.toml",
    )
    with pytest.raises(PluginError) as info:
        cluster_plugins(config, config.clusters[0])
    assert str(info.value).splitlines() == [
        "plugin.a.base: required for kind 'profile'",
        "plugin.b.colour: unknown option for kind 'motd'",
    ]


# volumes


def test_volume_devices_follow_the_clusters_order():
    assert [device_name(i) for i in range(3)] == ["/dev/sdf", "/dev/sdg", "/dev/sdh"]
    with pytest.raises(ValueError, match="at most 11"):
        device_name(11)


def test_volume_commands():
    volumes = [
        VolumeSection(name="segway-data", snapshot_id="snap-0abc", mount_path="/segway-data"),
        VolumeSection(name="results", volume_id="vol-0def", mount_path="/segway-results"),
    ]
    (name1, snap), (name2, shared) = volume_commands(volumes, "ip-10-0-0-1", device_wait=5)
    assert (name1, name2) == ("segway-data", "results")
    assert "for d in /dev/sdf /dev/xvdf" in snap.command
    assert '[ "$i" -ge 5 ]' in snap.command
    assert snap.command.startswith('dev=""; ')
    assert snap.command.endswith(
        "mkdir -p /segway-data && { mountpoint -q /segway-data ||"
        f' {{ {FORMAT_IF_BLANK} && mount "$dev" /segway-data; }}; }}'
    )  # formatted only when blank, mounted unless mounted: test_node_side.py runs it
    assert shared.command == (
        "mkdir -p /segway-results && { mountpoint -q /segway-results"
        " || mount -t nfs ip-10-0-0-1:/segway-results /segway-results; }"
    )
    for command in (snap, shared):  # valid shell (not run: it would mount)
        check = subprocess.run(
            ["sh", "-n", "-c", command.command], capture_output=True, check=False
        )
        assert check.returncode == 0, check.stderr


async def test_the_head_gets_its_master_banner(tmp_path: Path):
    plugins = [
        plugin("motd", "banner", path=str(tmp_path / "motd.tail"), versions=("segway=1.0.2",)),
        plugin("profile", "env", path=str(tmp_path / "env.sh"), base="/b"),  # nodes only
        plugin("motd", "denied", path="/proc/version/motd", text="x"),
    ]
    problems = await write_head_banners(plugins, "ip-10-0-0-5", "segway")
    text = (tmp_path / "motd.tail").read_text()
    assert "=== segway MASTER node ip-10-0-0-5 ===\nsegway version: 1.0.2\n" in text
    assert not (tmp_path / "env.sh").exists()
    (problem,) = problems
    assert problem.startswith("plugin.denied: append to /proc/version/motd on the head: ")

"""`[plugin.X] kind = "slurm"`: its options, checked; the node command that starts slurmd as a
dynamic node, run for real against tests.harness.slurm (marked `slurm`); and a cluster listing
it without load_source = "slurm" refused."""

from __future__ import annotations

import pytest

from controller.config.plugins import PluginError, SlurmPlugin, cluster_plugins, parse_plugin
from controller.config.schema import ClusterSection, Config, PluginSection
from controller.gridengine.node_plugins import NodeInfo, remote_commands
from tests.harness.slurm import Slurm

NODE = NodeInfo(instance_id="i-0123", address="127.0.20.5", hostname="ip-127-0-20-5")


def plugin(name: str = "s", **options: object):
    return parse_plugin(PluginSection(name=name, kind="slurm", options=tuple(options.items())))


def test_defaults_take_the_head_and_the_nodes_own_size():
    assert plugin() == SlurmPlugin(name="s")
    [command] = remote_commands(plugin(), NODE, "head-1")
    assert "slurmd -Z -N ip-127-0-20-5 --conf-server head-1 2>&1" in command.command
    assert "--conf " not in command.command
    assert command.what == "start slurmd as ip-127-0-20-5"


def test_options_reach_the_command():
    p = plugin(conf_server="ctl:7817", cpus=4, memory_mb=15000, slurmd="/opt/slurm/sbin/slurmd")
    [command] = remote_commands(p, NODE, "head-1")
    assert (
        "/opt/slurm/sbin/slurmd -Z -N ip-127-0-20-5 --conf-server ctl:7817"
        " --conf 'CPUs=4 RealMemory=15000'"
    ) in command.command


def test_bad_options_are_named():
    with pytest.raises(PluginError) as info:
        plugin(conf_server="a b:x", cpus=-1, memory_mb="1G", slurmd="bin/slurmd", nodes=3)
    lines = str(info.value).splitlines()
    assert "plugin.s.conf_server: expected a host name or host:port (got 'a b:x')" in lines
    assert "plugin.s.cpus: expected a whole number >= 0, got -1" in lines
    assert "plugin.s.memory_mb: expected a whole number >= 0, got '1G'" in lines
    assert (
        "plugin.s.slurmd: expected a program name or an absolute path (got 'bin/slurmd')" in lines
    )
    assert "plugin.s.nodes: unknown option for kind 'slurm'" in lines


def test_no_server_and_no_head_is_a_clear_error():
    with pytest.raises(PluginError, match=r"plugin\.s\.conf_server: not set and the head's name"):
        remote_commands(plugin(), NODE, "")


def test_a_slurm_plugin_needs_load_source_slurm():
    config = Config(plugins=(PluginSection(name="s", kind="slurm"),))
    cluster = ClusterSection(name="c", plugins=("s",))
    with pytest.raises(PluginError, match=r'cluster\.c\.plugins: \[plugin\.s\] is kind "slurm"'):
        cluster_plugins(config, cluster)


@pytest.mark.slurm
def test_node_command_joins_a_real_slurm_once(slurm: Slurm):
    p = plugin(conf_server=slurm.conf_server, cpus=2, memory_mb=1000)
    [command] = remote_commands(p, NODE, "")
    try:
        first = slurm.run("sh", "-c", command.command, check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        slurm.wait_idle(NODE.hostname)  # slurmd registers once in the background
        again = slurm.run("sh", "-c", command.command, check=False)  # slurmd runs: nothing to do
        assert again.returncode == 0 and again.stdout == ""
        shown = slurm.run("scontrol", "show", "node", NODE.hostname).stdout
        assert "CPUTot=2" in shown and "RealMemory=1000" in shown
    finally:
        slurm.stop_node(NODE.hostname)
        slurm.run("scontrol", "delete", f"nodename={NODE.hostname}", check=False)


@pytest.mark.slurm
def test_node_command_that_cannot_reach_slurmctld_says_why(slurm: Slurm):
    [command] = remote_commands(plugin(conf_server="127.0.0.1:1"), NODE, "")
    result = slurm.run("sh", "-c", command.command, check=False)
    assert result.returncode != 0
    assert "Unable to contact slurm controller" in result.stdout
    assert "slurmd could not join Slurm through slurmctld at 127.0.0.1:1" in result.stderr
    assert slurm.node_state(NODE.hostname) is None

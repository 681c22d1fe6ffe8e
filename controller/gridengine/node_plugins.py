"""The [plugin.X] kinds as commands: pure, no I/O.

Each plugin (controller.config.plugins holds their options) turns into the shell commands
ClusterNodeSetup runs on the node over SSH, in the order the cluster lists its plugins:

  profile        writes a profile.d script putting `base` on PATH, PYTHONPATH, LD_LIBRARY_PATH...
  motd           appends a block to /etc/motd.tail (or `path`); the block sits between marker
                 lines and replaces its earlier copy, so running setup twice leaves one block
  stop-services  stops the listed services; a service the node does not have is reported and
                 skipped
  commands       runs the listed shell commands, each must exit 0
  sge            registers the node with Grid Engine on the head (admin and exec host with
                 `complex_values mem_requested=<node memory>`, the consumable added to the complex
                 list if missing, the node added to the queue's hostlist) and starts its execd;
                 with head_is_exec_host = false the head leaves the queue. Its head-side part are
                 qconf/qmod calls (HeadCommand).

Every command is idempotent: a node may be set up again after a controller restart.
"""

from __future__ import annotations

import re
import shlex
import string
from dataclasses import dataclass

from controller.config.plugins import (
    CommandsPlugin,
    MotdPlugin,
    Plugin,
    PluginError,
    ProfilePlugin,
    SgePlugin,
    StopServicesPlugin,
)
from controller.gridengine.sge import exec_host_text, format_memory


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What commands may mention about the node being set up."""

    instance_id: str
    address: str
    hostname: str  # the EC2-style name, as Grid Engine knows it
    node_type: str = "COMPUTE"  # the seed's motd word (MASTER for the head)


@dataclass(frozen=True, slots=True)
class RemoteCommand:
    """A shell command line run on the node; `input` is fed to its stdin."""

    command: str
    what: str  # a few words for logs and failure reasons
    input: str | None = None


@dataclass(frozen=True, slots=True)
class HeadCommand:
    """A Grid Engine client call on the head. With `file_text`, a file holding it is passed as
    the last argument (qconf -Ae FILE). A failure whose output holds one of `ok_if` means the
    change was made already."""

    argv: tuple[str, ...]
    what: str
    file_text: str | None = None
    ok_if: tuple[str, ...] = ()


def remote_commands(plugin: Plugin, node: NodeInfo, head: str = "") -> list[RemoteCommand]:
    """The node-side commands of a plugin. For `sge` they run after the head has registered the
    node, and `head` is the head's host name."""
    match plugin:
        case ProfilePlugin():
            return [_write_file(plugin.path, profile_script(plugin), f"write {plugin.path}")]
        case MotdPlugin():
            return [_motd_command(plugin, node)]
        case StopServicesPlugin():
            return [RemoteCommand(_stop_service(s), f"stop service {s}") for s in plugin.services]
        case CommandsPlugin():
            return [
                RemoteCommand(c, f"command {i + 1} of {plugin.name}")
                for i, c in enumerate(plugin.commands)
            ]
        case SgePlugin():
            return _sge_node_commands(plugin, head)
    raise TypeError(f"not a plugin: {plugin!r}")


def profile_script(plugin: ProfilePlugin) -> str:
    home = f"{plugin.base}/arch/{plugin.arch}" if plugin.arch else plugin.base
    lines = [f"# Written by the controller (plugin {plugin.name}); replaced at every setup."]
    if plugin.arch:
        lines += [f'export ARCH="{plugin.arch}"', f'export ARCHHOME="{home}"']
    lines.append(f'export PATH="{home}/bin:$PATH"')
    if plugin.python_version:
        lines.append(_prepend("PYTHONPATH", f"{home}/lib/python{plugin.python_version}"))
    lines += [
        f'export HDF5_DIR="{home}"',
        _prepend("C_INCLUDE_PATH", f"{home}/include"),
        _prepend("LIBRARY_PATH", f"{home}/lib:{home}/lib64/R/lib"),
        _prepend("LD_LIBRARY_PATH", f"{home}/lib:{home}/lib64/R/lib"),
    ]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in plugin.env]
    return "\n".join(lines) + "\n"


def motd_markers(plugin: MotdPlugin) -> tuple[str, str]:
    """The lines that begin and end the plugin's block in the motd file."""
    return (
        f"# >>> {plugin.name} (controller) >>>",
        f"# <<< {plugin.name} (controller) <<<",
    )


def motd_block(plugin: MotdPlugin, node: NodeInfo) -> str:
    begin, end = motd_markers(plugin)
    text = string.Template(plugin.text).safe_substitute(
        hostname=node.hostname,
        address=node.address,
        instance_id=node.instance_id,
        node_type=node.node_type,
    )
    return f"{begin}\n{text.rstrip(chr(10))}\n{end}\n"


def _motd_command(plugin: MotdPlugin, node: NodeInfo) -> RemoteCommand:
    path = shlex.quote(plugin.path)
    begin, end = (_sed_regex(marker) for marker in motd_markers(plugin))
    command = (
        f"mkdir -p {shlex.quote(_dirname(plugin.path))} && touch {path}"
        f" && sed -i '/^{begin}$/,/^{end}$/d' {path} && cat >> {path}"
    )
    return RemoteCommand(command, f"append to {plugin.path}", input=motd_block(plugin, node))


def consumable_line(plugin: SgePlugin) -> str:
    """The `qconf -sc` line that defines the plugin's consumable, if it is missing."""
    return f"{plugin.consumable} {plugin.consumable} MEMORY <= YES YES 0 0"


def memory_command() -> RemoteCommand:
    """Prints the node's memory in bytes."""
    return RemoteCommand(
        "awk '/^MemTotal:/ {printf \"%.0f\\n\", $2 * 1024}' /proc/meminfo",
        "read MemTotal",
    )


def register_commands(
    plugin: SgePlugin, hostname: str, memory: str, head: str
) -> list[HeadCommand]:
    """Head-side calls that make `hostname` an exec host of the plugin's queue with `memory`
    (Grid Engine notation, e.g. 4096M) of the consumable. Run after the consumable exists."""
    commands = []
    if not plugin.head_is_exec_host:
        commands.append(
            HeadCommand(
                ("qconf", "-dattr", "queue", "hostlist", head, plugin.queue),
                f"remove the head {head} from {plugin.queue}",
                ok_if=("does not exist",),
            )
        )
    commands.append(HeadCommand(("qconf", "-ah", hostname), "add admin host"))
    if plugin.submit_host:
        commands.append(
            HeadCommand(("qconf", "-as", hostname), "add submit host", ok_if=("already",))
        )
    values = {plugin.consumable: memory}
    commands += [
        HeadCommand(
            ("qconf", "-Ae"),
            "add exec host",
            file_text=exec_host_text(hostname, values),
            ok_if=("already exists",),
        ),
        HeadCommand(
            ("qconf", "-rattr", "exechost", "complex_values", _values(values), hostname),
            f"set complex_values {_values(values)}",
        ),
        HeadCommand(
            ("qconf", "-aattr", "queue", "hostlist", hostname, plugin.queue),
            f"add to the hostlist of {plugin.queue}",
        ),
        HeadCommand(
            ("qmod", "-e", f"{plugin.queue}@{hostname}"), f"enable {plugin.queue}@{hostname}"
        ),
    ]
    return commands


def deregister_commands(plugin: SgePlugin, hostname: str) -> list[HeadCommand]:
    """Head-side calls that take `hostname` out of Grid Engine; each tolerates it being gone
    already."""
    gone = ("does not exist", "invalid queue", "can't resolve")
    commands = [
        HeadCommand(
            ("qmod", "-d", f"{plugin.queue}@{hostname}"),
            f"disable {plugin.queue}@{hostname}",
            ok_if=gone,
        ),
        HeadCommand(
            ("qconf", "-dattr", "queue", "hostlist", hostname, plugin.queue),
            f"remove from the hostlist of {plugin.queue}",
            ok_if=gone,
        ),
        HeadCommand(("qconf", "-de", hostname), "delete exec host", ok_if=gone),
    ]
    if plugin.submit_host:
        commands.append(HeadCommand(("qconf", "-ds", hostname), "delete submit host", ok_if=gone))
    commands.append(HeadCommand(("qconf", "-dh", hostname), "delete admin host", ok_if=gone))
    return commands


def _sge_node_commands(plugin: SgePlugin, head: str) -> list[RemoteCommand]:
    env = (
        f"export SGE_ROOT={shlex.quote(plugin.sge_root)} SGE_CELL={shlex.quote(plugin.cell)}"
        f' PATH="$SGE_ROOT/bin/{plugin.arch}:/usr/sbin:$PATH"'
    )
    commands = []
    if plugin.write_act_qmaster:
        common = '"$SGE_ROOT/$SGE_CELL/common"'
        commands.append(
            RemoteCommand(
                f"{env}; mkdir -p {common} && printf '%s\\n' {shlex.quote(head)}"
                f" > {common}/act_qmaster",
                "write act_qmaster",
            )
        )
    if plugin.start_execd:
        commands.append(
            RemoteCommand(f"{env}; pgrep -x sge_execd >/dev/null || sge_execd", "start sge_execd")
        )
    return commands


def node_memory(plugin: SgePlugin, meminfo_output: str) -> str:
    """The consumable capacity to give a node: the plugin's node_memory, else the bytes the
    node reported, in Grid Engine's notation."""
    if plugin.node_memory:
        return plugin.node_memory
    text = meminfo_output.strip()
    if not text.isdigit() or int(text) == 0:
        raise PluginError(f"cannot read the node's memory from /proc/meminfo (got {text!r})")
    return format_memory(int(text))


def _write_file(path: str, content: str, what: str) -> RemoteCommand:
    """Replace `path` atomically with stdin (readable by all, as profile.d scripts must be)."""
    tmp = shlex.quote(f"{path}.controller-tmp")
    command = (
        f"mkdir -p {shlex.quote(_dirname(path))} && cat > {tmp} && chmod 644 {tmp}"
        f" && mv -f {tmp} {shlex.quote(path)}"
    )
    return RemoteCommand(command, what, input=content)


def _stop_service(service: str) -> str:
    s = shlex.quote(service)
    missing = f"echo {shlex.quote(f'{service}: no such service, nothing to stop')}"
    return (
        f"if [ -d /run/systemd/system ]; then"
        f" if systemctl cat -- {s} >/dev/null 2>&1; then systemctl stop -- {s}; else {missing}; fi;"
        f" elif [ -x /etc/init.d/{s} ]; then /etc/init.d/{s} stop;"
        f" else {missing}; fi"
    )


def _prepend(variable: str, value: str) -> str:
    return f'export {variable}="{value}${{{variable}:+:${variable}}}"'


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _sed_regex(text: str) -> str:
    return re.sub(r"([.\[\]*^$\\/])", r"\\\1", text)


def _values(values: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())

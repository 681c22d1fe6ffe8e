"""The [plugin.X] kinds as commands: pure, no I/O.

Each plugin (controller.config.plugins holds their options) turns into the shell commands
ClusterNodeSetup runs on the node over SSH, in the order the cluster lists its plugins:

  profile        writes a profile.d script putting `base` on PATH, PYTHONPATH, LD_LIBRARY_PATH...
  motd           appends a block to /etc/motd.tail (or `path`); the block sits between marker
                 lines and replaces its earlier copy, so running setup twice leaves one block
                 (the file is rewritten whole and renamed, so two setups at once leave one
                 too); without `text`, the block is the seed's banner (`default_banner`)
  stop-services  stops the listed services; a service the node does not have is reported and
                 skipped
  commands       runs the listed shell commands, each must exit 0; with the node's state_dir,
                 each runs once per instance and boot (a marker there says it succeeded), so a
                 node set up again after a restart does not run a command that is not
                 idempotent twice
  sge            registers the node with Grid Engine on the head (admin and exec host with
                 `complex_values mem_requested=<node memory>`, the consumable added to the complex
                 list if missing, the node added to the queue's hostlist) and starts its execd.
                 Its head-side part are qconf/qmod calls (HeadCommand). With head_is_exec_host =
                 false the head keeps no slots in the queue (`head_commands`, at start).
  slurm          starts the node's slurmd as a dynamic node under its EC2 name (`slurmd -Z -N`),
                 configless: it fetches slurm.conf from slurmctld (`conf_server`, else the head),
                 so the node needs only slurmd, and munged with the cluster's key. Slurm's side
                 (drain, delete) is controller.slurm.

Every command is idempotent (or, for `commands`, run once): a node may be set up again after a
controller restart, even while the killed controller's commands still run there (`locked`
serialises the two on the node).
"""

from __future__ import annotations

import hashlib
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
    SlurmPlugin,
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
    cluster: str = ""  # the [cluster.X] it belongs to
    # A directory on the node for this instance's setup (its lock, the `commands` markers);
    # under /run, so it starts empty at each boot. "" = none.
    state_dir: str = ""


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
                RemoteCommand(_once(node, plugin.name, i, c), f"command {i + 1} of {plugin.name}")
                for i, c in enumerate(plugin.commands)
            ]
        case SgePlugin():
            return _sge_node_commands(plugin, head)
        case SlurmPlugin():
            return [_start_slurmd(plugin, node, head)]
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


BANNER_RULE = "*" * 63


def default_banner(plugin: MotdPlugin) -> str:
    """The seed's motd banner: the node type, the cluster, each version the plugin is told and
    where the packages are; `$`-placeholders are filled per node by motd_block."""
    lines = ["", BANNER_RULE, "=== ${cluster} ${node_type} node ${hostname} ==="]
    lines += [f"{name} version: {version}" for name, version in plugin.versions]
    if plugin.base:
        lines.append(f"Packages installed in {plugin.base}")
    return "\n".join([*lines, BANNER_RULE, ""])


def motd_block(plugin: MotdPlugin, node: NodeInfo) -> str:
    begin, end = motd_markers(plugin)
    text = string.Template(plugin.text or default_banner(plugin)).safe_substitute(
        hostname=node.hostname,
        address=node.address,
        instance_id=node.instance_id,
        node_type=node.node_type,
        cluster=node.cluster or "cluster",
    )
    return f"{begin}\n{text.rstrip(chr(10))}\n{end}\n"


def _motd_command(plugin: MotdPlugin, node: NodeInfo) -> RemoteCommand:
    """The old block dropped and the new one appended, into a file of its own that replaces
    the motd: setups that run at once (a restart during a setup) leave one block."""
    path = shlex.quote(plugin.path)
    begin, end = (_sed_regex(marker) for marker in motd_markers(plugin))
    tmp = _unique_tmp(plugin.path)
    command = (
        f"mkdir -p {shlex.quote(_dirname(plugin.path))} && touch {path} && {tmp}"
        f' && sed \'/^{begin}$/,/^{end}$/d\' {path} > "$tmp" && cat >> "$tmp"'
        f' && chmod 644 "$tmp" && mv -f "$tmp" {path}'
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


def head_commands(plugin: SgePlugin, head: str) -> list[HeadCommand]:
    """With head_is_exec_host = false: the head runs no job, yet stays in the queue with no
    slots. (Taken out, as the seed's segway-sge did, it would leave the queue without a host
    whenever no node is up, and Grid Engine refuses every job then, even `qsub -w n`: "job is
    not allowed to run in any queue".) Slots first, so no job starts there in between."""
    if plugin.head_is_exec_host:
        return []
    return [
        HeadCommand(
            ("qconf", "-mattr", "queue", "slots", f"[{head}=0]", plugin.queue),
            f"give the head {head} no slots in {plugin.queue}",
        ),
        HeadCommand(
            ("qconf", "-aattr", "queue", "hostlist", head, plugin.queue),
            f"keep the head {head} in the hostlist of {plugin.queue}",
        ),
    ]


def register_commands(plugin: SgePlugin, hostname: str, memory: str) -> list[HeadCommand]:
    """Head-side calls that make `hostname` an exec host of the plugin's queue with `memory`
    (Grid Engine notation, e.g. 4096M) of the consumable. Run after the consumable exists."""
    commands = [HeadCommand(("qconf", "-ah", hostname), "add admin host")]
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
        commands.append(RemoteCommand(f"{env}; {_start_execd(head)}", "start sge_execd"))
    return commands


def _start_execd(head: str) -> str:
    """Start the node's execd unless it runs. An execd that cannot reach the qmaster says so,
    goes to the background and exits 0; the step fails instead: such a node would never take a
    job, and the queue would keep asking for more of them."""
    gave_up = shlex.quote("can't get configuration from qmaster")
    why = shlex.quote(
        f"sge_execd could not reach the qmaster {head}; the node must reach it on sge_qmaster's"
        " port (6444) and the head the node on sge_execd's (6445)"
    )
    return (
        "pgrep -x sge_execd >/dev/null && exit 0;"
        ' said=$(sge_execd 2>&1); status=$?; [ -z "$said" ] || printf "%s\\n" "$said";'
        f' case "$said" in *{gave_up}*) printf "%s (it said: %s)\\n" {why} "$said" >&2;'
        " exit 1;; esac; exit $status"
    )


def _start_slurmd(plugin: SlurmPlugin, node: NodeInfo, head: str) -> RemoteCommand:
    """Start the node's slurmd as the dynamic node `node.hostname`, unless it runs. CPUs and
    memory not set in the plugin are the ones slurmd finds on the node."""
    server = plugin.conf_server or head
    if not server:
        raise PluginError(
            f"plugin.{plugin.name}.conf_server: not set and the head's name is not known;"
            " set it to slurmctld's host[:port]"
        )
    argv = [plugin.slurmd, "-Z", "-N", node.hostname, "--conf-server", server]
    conf = [f"CPUs={plugin.cpus}"] if plugin.cpus else []
    conf += [f"RealMemory={plugin.memory_mb}"] if plugin.memory_mb else []
    if conf:
        argv += ["--conf", " ".join(conf)]
    why = shlex.quote(
        f"slurmd could not join Slurm through slurmctld at {server}: the node must reach"
        " slurmctld's port (6817 unless conf_server names another), slurmctld must have"
        " SlurmctldParameters=enable_configless, and munged must run on the node with the"
        " cluster's key"
    )
    command = (
        "pgrep -x slurmd >/dev/null && exit 0;"
        f" said=$({shlex.join(argv)} 2>&1); status=$?;"
        ' [ -z "$said" ] || printf "%s\n" "$said";'
        f' [ "$status" -eq 0 ] || printf "%s\n" {why} >&2; exit $status'
    )
    return RemoteCommand(command, f"start slurmd as {node.hostname}")


def node_memory(plugin: SgePlugin, meminfo_output: str) -> str:
    """The consumable capacity to give a node: the plugin's node_memory, else the bytes the
    node reported, in Grid Engine's notation."""
    if plugin.node_memory:
        return plugin.node_memory
    text = meminfo_output.strip()
    if not text.isdigit() or int(text) == 0:
        raise PluginError(f"cannot read the node's memory from /proc/meminfo (got {text!r})")
    return format_memory(int(text))


def locked(command: RemoteCommand, node: NodeInfo) -> RemoteCommand:
    """`command` under the node's setup lock (flock, where the node has it): a setup started
    again after a restart waits for the commands the killed controller left running there.
    `-o`: a daemon the command starts (sge_execd) does not keep holding the lock."""
    if not node.state_dir:
        return command
    lock = shlex.quote(f"{node.state_dir}/setup.lock")
    inner = shlex.quote(command.command)
    wrapped = (
        f"mkdir -p {shlex.quote(node.state_dir)} && if command -v flock >/dev/null 2>&1;"
        f" then flock -o {lock} sh -c {inner}; else sh -c {inner}; fi"
    )
    return RemoteCommand(wrapped, command.what, command.input)


def _once(node: NodeInfo, plugin: str, index: int, command: str) -> str:
    """`command`, skipped when its marker says it succeeded on this instance since boot."""
    if not node.state_dir:
        return command
    digest = hashlib.sha256(command.encode()).hexdigest()[:16]
    mark = shlex.quote(f"{node.state_dir}/done-{plugin}-{index + 1}-{digest}")
    return (
        f"if [ -e {mark} ]; then echo 'done before, not run again';"
        f" else ( {command}\n) && touch {mark}; fi"
    )


def _write_file(path: str, content: str, what: str) -> RemoteCommand:
    """Replace `path` atomically with stdin (readable by all, as profile.d scripts must be),
    through a temp file of this run's own: two setups at once cannot take each other's."""
    command = (
        f"mkdir -p {shlex.quote(_dirname(path))} && {_unique_tmp(path)}"
        f' && cat > "$tmp" && chmod 644 "$tmp" && mv -f "$tmp" {shlex.quote(path)}'
    )
    return RemoteCommand(command, what, input=content)


def _unique_tmp(path: str) -> str:
    """Shell that sets $tmp to a new file beside `path` (same file system: mv is a rename)."""
    pattern = shlex.quote(f"{_dirname(path)}/.{path.rsplit('/', 1)[-1]}.controller-XXXXXX")
    return f"tmp=$(mktemp {pattern})"


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

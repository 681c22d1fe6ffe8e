"""The [plugin.X] kinds a batch node is set up with, as commands: pure, no I/O.

Each plugin turns its options into the shell commands ClusterNodeSetup runs on the node over SSH,
in the order the cluster lists its plugins, like the seed's StarCluster `segway-setup` plugin:

  profile        writes a profile.d script putting `base` (Segway's build volume) on PATH,
                 PYTHONPATH, LD_LIBRARY_PATH, ... (the seed's PROFILE_TMPL, with ARCH and the
                 Python version as options instead of constants)
  motd           appends a block to /etc/motd.tail (or `path`); the block sits between marker
                 lines and replaces its earlier copy, so running setup twice leaves one block
  stop-services  stops the listed services (the seed's SHUTDOWN_SERVICES); a service the node
                 does not have is reported and skipped
  commands       runs the listed shell commands, each must exit 0
  sge            registers the node with Grid Engine on the head (admin and exec host with
                 `complex_values mem_requested=<node memory>`, the consumable added to the complex
                 list if missing, the node added to the queue's hostlist) and starts its execd;
                 with head_is_exec_host = false the head leaves the queue, as the seed's
                 segway-sge did. Its head-side part are qconf/qmod calls (HeadCommand).

Every command is idempotent: a node may be set up again after a controller restart. Paths and
names in options are checked strictly, so nothing from the config needs shell quoting beyond
shlex.quote. `parse_plugin` raises PluginError naming `plugin.NAME.key` and the problem.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Sequence
from dataclasses import dataclass

from controller.config import ClusterSection, Config, PluginSection
from controller.sge import MEM_CONSUMABLE, exec_host_text, format_memory

_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
_SAFE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PluginError(ValueError):
    """Bad plugin options; one `plugin.NAME.key: reason` line each."""


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


# --- the plugin kinds --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfilePlugin:
    name: str
    path: str
    base: str
    arch: str = "Linux-x86_64"  # "" = the tools live directly under `base`
    python_version: str = ""  # e.g. "2.6": adds base/.../lib/python2.6 to PYTHONPATH
    env: tuple[tuple[str, str], ...] = ()  # extra exports

    def script(self) -> str:
        home = f"{self.base}/arch/{self.arch}" if self.arch else self.base
        lines = [f"# Written by the controller (plugin {self.name}); replaced at every setup."]
        if self.arch:
            lines += [f'export ARCH="{self.arch}"', f'export ARCHHOME="{home}"']
        lines.append(f'export PATH="{home}/bin:$PATH"')
        if self.python_version:
            lines.append(_prepend("PYTHONPATH", f"{home}/lib/python{self.python_version}"))
        lines += [
            f'export HDF5_DIR="{home}"',
            _prepend("C_INCLUDE_PATH", f"{home}/include"),
            _prepend("LIBRARY_PATH", f"{home}/lib:{home}/lib64/R/lib"),
            _prepend("LD_LIBRARY_PATH", f"{home}/lib:{home}/lib64/R/lib"),
        ]
        lines += [f"export {key}={shlex.quote(value)}" for key, value in self.env]
        return "\n".join(lines) + "\n"

    def remote_commands(self, node: NodeInfo) -> list[RemoteCommand]:
        return [_write_file(self.path, self.script(), f"write {self.path}")]


@dataclass(frozen=True, slots=True)
class MotdPlugin:
    name: str
    text: str  # may use $hostname, $address, $instance_id, $node_type
    path: str = "/etc/motd.tail"

    @property
    def begin(self) -> str:
        return f"# >>> {self.name} (controller) >>>"

    @property
    def end(self) -> str:
        return f"# <<< {self.name} (controller) <<<"

    def block(self, node: NodeInfo) -> str:
        text = string.Template(self.text).safe_substitute(
            hostname=node.hostname,
            address=node.address,
            instance_id=node.instance_id,
            node_type=node.node_type,
        )
        return f"{self.begin}\n{text.rstrip(chr(10))}\n{self.end}\n"

    def remote_commands(self, node: NodeInfo) -> list[RemoteCommand]:
        path = shlex.quote(self.path)
        begin, end = (_sed_regex(marker) for marker in (self.begin, self.end))
        command = (
            f"mkdir -p {shlex.quote(_dirname(self.path))} && touch {path}"
            f" && sed -i '/^{begin}$/,/^{end}$/d' {path} && cat >> {path}"
        )
        return [RemoteCommand(command, f"append to {self.path}", input=self.block(node))]


@dataclass(frozen=True, slots=True)
class StopServicesPlugin:
    name: str
    services: tuple[str, ...]

    def remote_commands(self, node: NodeInfo) -> list[RemoteCommand]:
        return [RemoteCommand(_stop_service(s), f"stop service {s}") for s in self.services]


@dataclass(frozen=True, slots=True)
class CommandsPlugin:
    name: str
    commands: tuple[str, ...]

    def remote_commands(self, node: NodeInfo) -> list[RemoteCommand]:
        return [
            RemoteCommand(c, f"command {i + 1} of {self.name}") for i, c in enumerate(self.commands)
        ]


@dataclass(frozen=True, slots=True)
class SgePlugin:
    name: str
    sge_root: str = "/var/lib/gridengine"
    cell: str = "default"
    queue: str = "all.q"
    head_is_exec_host: bool = True
    node_memory: str = ""  # e.g. "15G"; "" = the node's MemTotal
    submit_host: bool = True  # jobs may be submitted from nodes, as on StarCluster
    start_execd: bool = True
    write_act_qmaster: bool = False  # for images whose SGE_ROOT is not shared from the head
    arch: str = "lx-amd64"  # Grid Engine's binary directory name under $SGE_ROOT/bin
    bin_dir: str = ""  # where the head's Grid Engine clients are; "" = PATH
    consumable: str = MEM_CONSUMABLE
    # Runs the head's Grid Engine clients through another command, e.g. ["sudo", "-u",
    # "sgeadmin"], or ["ip", "netns", "exec", "NAME"] where the qmaster lives in a network
    # namespace (the tests); [] = run them directly.
    command_prefix: tuple[str, ...] = ()

    @property
    def consumable_line(self) -> str:
        """The `qconf -sc` line that defines the consumable, if it is missing."""
        return f"{self.consumable} {self.consumable} MEMORY <= YES YES 0 0"

    def memory_command(self) -> RemoteCommand:
        """Prints the node's memory in bytes."""
        return RemoteCommand(
            "awk '/^MemTotal:/ {printf \"%.0f\\n\", $2 * 1024}' /proc/meminfo",
            "read MemTotal",
        )

    def register_commands(self, hostname: str, memory: str, head: str) -> list[HeadCommand]:
        """Head-side calls that make `hostname` an exec host of `queue` with `memory` (Grid
        Engine notation, e.g. 4096M) of the consumable. Run after the consumable exists."""
        commands = []
        if not self.head_is_exec_host:
            commands.append(
                HeadCommand(
                    ("qconf", "-dattr", "queue", "hostlist", head, self.queue),
                    f"remove the head {head} from {self.queue}",
                    ok_if=("does not exist",),
                )
            )
        commands.append(HeadCommand(("qconf", "-ah", hostname), "add admin host"))
        if self.submit_host:
            commands.append(
                HeadCommand(("qconf", "-as", hostname), "add submit host", ok_if=("already",))
            )
        values = {self.consumable: memory}
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
                ("qconf", "-aattr", "queue", "hostlist", hostname, self.queue),
                f"add to the hostlist of {self.queue}",
            ),
            HeadCommand(
                ("qmod", "-e", f"{self.queue}@{hostname}"), f"enable {self.queue}@{hostname}"
            ),
        ]
        return commands

    def deregister_commands(self, hostname: str) -> list[HeadCommand]:
        """Head-side calls that take `hostname` out of Grid Engine; each tolerates it being
        gone already."""
        gone = ("does not exist", "invalid queue", "can't resolve")
        commands = [
            HeadCommand(
                ("qmod", "-d", f"{self.queue}@{hostname}"),
                f"disable {self.queue}@{hostname}",
                ok_if=gone,
            ),
            HeadCommand(
                ("qconf", "-dattr", "queue", "hostlist", hostname, self.queue),
                f"remove from the hostlist of {self.queue}",
                ok_if=gone,
            ),
            HeadCommand(("qconf", "-de", hostname), "delete exec host", ok_if=gone),
        ]
        if self.submit_host:
            commands.append(
                HeadCommand(("qconf", "-ds", hostname), "delete submit host", ok_if=gone)
            )
        commands.append(HeadCommand(("qconf", "-dh", hostname), "delete admin host", ok_if=gone))
        return commands

    def remote_commands(self, node: NodeInfo, head: str) -> list[RemoteCommand]:
        """Node-side commands, run after the head has registered the node."""
        env = (
            f"export SGE_ROOT={shlex.quote(self.sge_root)} SGE_CELL={shlex.quote(self.cell)}"
            f' PATH="$SGE_ROOT/bin/{self.arch}:/usr/sbin:$PATH"'
        )
        commands = []
        if self.write_act_qmaster:
            common = '"$SGE_ROOT/$SGE_CELL/common"'
            commands.append(
                RemoteCommand(
                    f"{env}; mkdir -p {common} && printf '%s\\n' {shlex.quote(head)}"
                    f" > {common}/act_qmaster",
                    "write act_qmaster",
                )
            )
        if self.start_execd:
            commands.append(
                RemoteCommand(
                    f"{env}; pgrep -x sge_execd >/dev/null || sge_execd", "start sge_execd"
                )
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


Plugin = ProfilePlugin | MotdPlugin | StopServicesPlugin | CommandsPlugin | SgePlugin


# --- options -> plugins ------------------------------------------------------------------------


def parse_plugin(section: PluginSection) -> Plugin:
    """The plugin a [plugin.NAME] section describes; PluginError lists every bad option."""
    opts = _Options(section)
    plugin: Plugin
    match section.kind:
        case "profile":
            plugin = ProfilePlugin(
                name=section.name,
                path=opts.path("path", f"/etc/profile.d/{section.name}.sh"),
                base=opts.path("base", required=True),
                arch=opts.word("arch", "Linux-x86_64", empty_ok=True),
                python_version=opts.word("python_version", "", empty_ok=True),
                env=opts.env("env"),
            )
        case "motd":
            plugin = MotdPlugin(
                name=section.name,
                text=opts.text("text", required=True),
                path=opts.path("path", "/etc/motd.tail"),
            )
        case "stop-services":
            plugin = StopServicesPlugin(name=section.name, services=opts.words("services"))
        case "commands":
            plugin = CommandsPlugin(name=section.name, commands=opts.texts("commands"))
        case "sge":
            plugin = SgePlugin(
                name=section.name,
                sge_root=opts.path("sge_root", "/var/lib/gridengine"),
                cell=opts.word("cell", "default"),
                queue=opts.word("queue", "all.q"),
                head_is_exec_host=opts.flag("head_is_exec_host", True),
                node_memory=opts.memory("node_memory"),
                submit_host=opts.flag("submit_host", True),
                start_execd=opts.flag("start_execd", True),
                write_act_qmaster=opts.flag("write_act_qmaster", False),
                arch=opts.word("arch", "lx-amd64"),
                bin_dir=opts.path("bin_dir", "", empty_ok=True),
                consumable=opts.word("consumable", MEM_CONSUMABLE),
                command_prefix=opts.argv("command_prefix"),
            )
        case _:
            opts.problem("kind", f"unknown plugin kind {section.kind!r}")
            plugin = CommandsPlugin(name=section.name, commands=())
    opts.finish()
    return plugin


def cluster_plugins(config: Config, cluster: ClusterSection) -> list[Plugin]:
    """The cluster's plugins, in its order; PluginError lists the problems of all of them."""
    sections = {p.name: p for p in config.plugins}
    plugins, problems = [], []
    for name in cluster.plugins:
        if name not in sections:
            problems.append(f"cluster.{cluster.name}.plugins: no [plugin.{name}] section")
            continue
        try:
            plugins.append(parse_plugin(sections[name]))
        except PluginError as exc:
            problems.append(str(exc))
    if problems:
        raise PluginError("\n".join(problems))
    return plugins


def sge_plugin(plugins: Sequence[Plugin]) -> SgePlugin | None:
    """The cluster's Grid Engine plugin, if it lists one (registration happens only then)."""
    return next((p for p in plugins if isinstance(p, SgePlugin)), None)


class _Options:
    """Typed reads of a plugin's options; problems are collected, unknown keys reported."""

    def __init__(self, section: PluginSection) -> None:
        self.section = section
        self.values = dict(section.options)
        self.used: set[str] = set()
        self.problems: list[str] = []

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(f"plugin.{self.section.name}.{key}: {reason}")

    def _get(self, key: str) -> object:
        self.used.add(key)
        return self.values.get(key)

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        value = self._get(key)
        if value is None:
            if required:
                self.problem(key, f"required for kind {self.section.kind!r}")
            return default
        if not isinstance(value, str):
            self.problem(key, f"expected a string, got {value!r}")
            return default
        return value

    def path(
        self, key: str, default: str = "", *, required: bool = False, empty_ok: bool = False
    ) -> str:
        value = self.text(key, default, required=required)
        if value == "" and (empty_ok or required):  # a missing required one is reported
            return value
        if not _SAFE_PATH.fullmatch(value):
            self.problem(
                key, f"expected an absolute path of letters, digits and ._+@/- (got {value!r})"
            )
            return default
        return value

    def word(self, key: str, default: str, *, empty_ok: bool = False) -> str:
        value = self.text(key, default)
        if value == "" and empty_ok:
            return value
        if not _SAFE_WORD.fullmatch(value):
            self.problem(key, f"expected a name of letters, digits and ._+@- (got {value!r})")
            return default
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(key, f"expected true or false, got {value!r}")
            return default
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            self.problem(key, f"required for kind {self.section.kind!r}: an array of strings")
            return ()
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            self.problem(key, f"expected an array of strings, got {value!r}")
            return ()
        if not value:
            self.problem(key, "must not be empty")
        return value

    def argv(self, key: str) -> tuple[str, ...]:
        """An optional command line as an array of strings ([] or absent: none)."""
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
            self.problem(key, f"expected an array of non-empty strings, got {value!r}")
            return ()
        return value

    def words(self, key: str) -> tuple[str, ...]:
        values = self.texts(key)
        bad = [v for v in values if not _SAFE_WORD.fullmatch(v)]
        if bad:
            self.problem(key, f"not a service name: {', '.join(map(repr, bad))}")
            return ()
        return values

    def env(self, key: str) -> tuple[tuple[str, str], ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            self.problem(key, f'expected an array of "NAME=VALUE" strings, got {value!r}')
            return ()
        pairs = []
        for item in value:
            name, sep, text = item.partition("=")
            if not sep or not _ENV_NAME.fullmatch(name):
                self.problem(key, f'expected "NAME=VALUE", got {item!r}')
            else:
                pairs.append((name, text))
        return tuple(pairs)

    def memory(self, key: str) -> str:
        value = self.text(key, "")
        if value and not re.fullmatch(r"[0-9]+(\.[0-9]+)?[kKmMgGtT]?", value):
            self.problem(key, f"expected a Grid Engine memory value like '15G' (got {value!r})")
            return ""
        return value

    def finish(self) -> None:
        for key in self.values.keys() - self.used:
            self.problem(key, f"unknown option for kind {self.section.kind!r}")
        if self.problems:
            raise PluginError("\n".join(self.problems))


# --- shell helpers -----------------------------------------------------------------------------


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

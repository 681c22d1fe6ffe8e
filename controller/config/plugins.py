"""The [plugin.X] kinds a batch node is set up with: their options, read and checked.

Each kind's options become one frozen dataclass; controller.gridengine.node_plugins turns them into
the commands ClusterNodeSetup runs, in the order the cluster lists its plugins, like the seed's
StarCluster `segway-setup` plugin:

  profile        a profile.d script putting `base` (Segway's build volume) on PATH, PYTHONPATH,
                 LD_LIBRARY_PATH, ... (the seed's PROFILE_TMPL, with ARCH and the Python version
                 as options instead of constants)
  motd           a block appended to /etc/motd.tail (or `path`), replacing its earlier copy;
                 without `text`, the seed's kind of banner: the node type (MASTER or COMPUTE),
                 the cluster, the `versions` it is told ("segway=1.0.2") and where `base` is
  stop-services  the services to stop (the seed's SHUTDOWN_SERVICES)
  commands       shell commands, each must exit 0
  sge            how the node joins Grid Engine on the head (queue, consumable, execd); with
                 head_is_exec_host = false the head runs no job (no slots in the queue)
  slurm          how the node joins Slurm as a dynamic node (slurmd -Z, configless from
                 `conf_server`); only with the cluster's load_source = "slurm"

Paths and names in options are checked strictly, so nothing from the config needs shell quoting
beyond shlex.quote. `parse_plugin` raises PluginError naming `plugin.NAME.key` and the problem;
the config reader runs `cluster_plugins` for every cluster, so `check-config` reports them too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from controller.config.checks import join
from controller.config.schema import ClusterSection, Config, PluginSection

KNOWN_PLUGIN_KINDS = ("profile", "motd", "stop-services", "sge", "commands", "slurm")
# The Grid Engine consumable Segway requests memory with (`qsub -l mem_requested=...`).
MEM_CONSUMABLE = "mem_requested"

_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]*")
_SAFE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+@-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PluginError(ValueError):
    """Bad plugin options; one `plugin.NAME.key: reason` line each."""


@dataclass(frozen=True, slots=True)
class ProfilePlugin:
    name: str
    path: str
    base: str
    arch: str = "Linux-x86_64"  # "" = the tools live directly under `base`
    python_version: str = ""  # e.g. "2.6": adds base/.../lib/python2.6 to PYTHONPATH
    env: tuple[tuple[str, str], ...] = ()  # extra exports


@dataclass(frozen=True, slots=True)
class MotdPlugin:
    name: str
    text: str = ""  # may use $hostname, $address, $instance_id, $node_type, $cluster
    path: str = "/etc/motd.tail"
    # For the banner written without `text`: (package, version) pairs, and where they live.
    versions: tuple[tuple[str, str], ...] = ()
    base: str = ""


@dataclass(frozen=True, slots=True)
class StopServicesPlugin:
    name: str
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandsPlugin:
    name: str
    commands: tuple[str, ...]


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


@dataclass(frozen=True, slots=True)
class SlurmPlugin:
    name: str
    conf_server: str = ""  # slurmctld as host[:port] for configless slurmd; "" = the head
    cpus: int = 0  # CPUs the node offers; 0 = the node's own (nproc)
    memory_mb: int = 0  # RealMemory; 0 = the node's MemTotal
    slurmd: str = "slurmd"  # the node's slurmd (a path, or found on PATH)
    # The head's clients (squeue, sinfo, scontrol): their slurm.conf ("" = their default),
    # where they are ("" = PATH) and a command to run them through (e.g. ["sudo", "-u", "slurm"]).
    slurm_conf: str = ""
    bin_dir: str = ""
    command_prefix: tuple[str, ...] = ()


Plugin = ProfilePlugin | MotdPlugin | StopServicesPlugin | CommandsPlugin | SgePlugin | SlurmPlugin


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
                text=opts.text("text"),
                path=opts.path("path", "/etc/motd.tail"),
                versions=opts.versions("versions"),
                base=opts.path("base", "", empty_ok=True),
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
        case "slurm":
            plugin = SlurmPlugin(
                name=section.name,
                conf_server=opts.address("conf_server"),
                cpus=opts.count("cpus"),
                memory_mb=opts.count("memory_mb"),
                slurmd=opts.program("slurmd", "slurmd"),
                slurm_conf=opts.path("slurm_conf", "", empty_ok=True),
                bin_dir=opts.path("bin_dir", "", empty_ok=True),
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
            plugin = parse_plugin(sections[name])
        except PluginError as exc:
            problems.append(str(exc))
            continue
        plugins.append(plugin)
        if isinstance(plugin, SlurmPlugin) and cluster.load_source != "slurm":
            problems.append(
                f'cluster.{cluster.name}.plugins: [plugin.{name}] is kind "slurm", which'
                ' needs load_source = "slurm"'
            )
        if isinstance(plugin, SgePlugin) and cluster.load_source == "slurm":
            problems.append(
                f'cluster.{cluster.name}.plugins: [plugin.{name}] is kind "sge", but the'
                ' cluster\'s load_source is "slurm": list a plugin of kind "slurm" instead'
            )
    if problems:
        raise PluginError("\n".join(problems))
    return plugins


def sge_plugin(plugins: Sequence[Plugin]) -> SgePlugin | None:
    """The cluster's Grid Engine plugin, if it lists one (registration happens only then)."""
    return next((p for p in plugins if isinstance(p, SgePlugin)), None)


def slurm_plugin(plugins: Sequence[Plugin]) -> SlurmPlugin | None:
    """The cluster's Slurm plugin, if it lists one (nodes join Slurm only then)."""
    return next((p for p in plugins if isinstance(p, SlurmPlugin)), None)


class _Options:
    """Typed reads of a plugin's options; problems are collected, unknown keys reported."""

    def __init__(self, section: PluginSection) -> None:
        self.section = section
        self.values = dict(section.options)
        self.used: set[str] = set()
        self.problems: list[str] = []

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(f"{join('plugin', self.section.name, key)}: {reason}")

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

    def versions(self, key: str) -> tuple[tuple[str, str], ...]:
        """An optional array of "NAME=VERSION" strings, both plain words."""
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            self.problem(key, f'expected an array of "NAME=VERSION" strings, got {value!r}')
            return ()
        pairs = []
        for item in value:
            name, sep, version = item.partition("=")
            if sep and _SAFE_WORD.fullmatch(name) and _SAFE_WORD.fullmatch(version):
                pairs.append((name, version))
            else:
                self.problem(key, f'expected "NAME=VERSION" (letters, digits, ._+@-), got {item!r}')
        return tuple(pairs)

    def count(self, key: str) -> int:
        """An optional whole number >= 0 (0 when absent)."""
        value = self._get(key)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.problem(key, f"expected a whole number >= 0, got {value!r}")
            return 0
        return value

    def address(self, key: str) -> str:
        """An optional host or host:port ("" when absent)."""
        value = self.text(key, "")
        host, sep, port = value.rpartition(":") if ":" in value else (value, "", "")
        if value and not (
            _SAFE_WORD.fullmatch(host) and (not sep or (port.isdigit() and 0 < int(port) < 65536))
        ):
            self.problem(key, f"expected a host name or host:port (got {value!r})")
            return ""
        return value

    def program(self, key: str, default: str) -> str:
        """A program's absolute path, or its name to be found on PATH."""
        value = self.text(key, default)
        if not (_SAFE_PATH.fullmatch(value) or _SAFE_WORD.fullmatch(value)):
            self.problem(key, f"expected a program name or an absolute path (got {value!r})")
            return default
        return value

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

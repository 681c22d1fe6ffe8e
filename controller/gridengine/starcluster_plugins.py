"""StarCluster's [plugin X] sections as our [plugin.X] kinds, where one does the same job. Pure.

A StarCluster plugin is a Python class (SETUP_CLASS) run on the workstation; we cannot run it.
Three are common enough, and simple enough, to say what they do in our kinds:

  segway_plugin.Setup (the seed's)  -> `profile` (Segway on PATH, from SEGWAY_PATH) and `motd`
                                       (the seed's banner naming the node type)
  starcluster.plugins.sge.SGEPlugin -> `sge` (MASTER_IS_EXEC_HOST -> head_is_exec_host)
  ...pkginstaller.PackageInstaller  -> `commands` (apt-get install PACKAGES, as it did)

Any other class is not carried over; the converter says so and drops it from the clusters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from controller.gridengine.starcluster_ini import Option, printable, shown

_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_:=~-]*")
SEGWAY_BANNER = "=== Segway $node_type node ===\nSegway, genomedata and segtools from {base}"


@dataclass
class MappedPlugin:
    """One [plugin.NAME] to write: its options with the StarCluster line each came from."""

    name: str
    kind: str
    origin: Option  # SETUP_CLASS
    options: list[tuple[str, object, Option]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # `# not carried over: ...` lines


def map_plugin(
    name: str, options: dict[str, Option], taken: set[str]
) -> tuple[list[MappedPlugin], str]:
    """Our plugins for StarCluster's [plugin NAME] (new names avoid `taken`, which grows), or
    none and why it cannot be carried over. `options` must hold setup_class."""
    setup = options["setup_class"]
    cls = setup.value.strip()
    rest = {key: opt for key, opt in options.items() if key != "setup_class"}
    match cls.split(".")[-2:]:
        case ["segway_plugin", "Setup"]:
            return _segway(name, setup, rest, taken)
        case ["sge", "SGEPlugin"]:
            return _sge(name, setup, rest)
        case ["pkginstaller", "PackageInstaller"]:
            return _packages(name, setup, rest)
    return [], (
        f"SETUP_CLASS = {printable(cls)}: a StarCluster Python plugin cannot run here; "
        'write what it does as a [plugin.X] of kind "profile", "motd", "stop-services", '
        '"commands" or "sge"'
    )


def free_name(wanted: str, taken: set[str]) -> str:
    """`wanted`, or `wanted-2`, `-3`... if taken; kept to 63 characters; added to `taken`."""
    candidate, n = wanted[:63], 1
    while candidate in taken:
        n += 1
        candidate = f"{wanted[: 63 - len(str(n)) - 1]}-{n}"
    taken.add(candidate)
    return candidate


def _segway(
    name: str, setup: Option, rest: dict[str, Option], taken: set[str]
) -> tuple[list[MappedPlugin], str]:
    path = rest.pop("segway_path", None)
    if path is None or not path.value:
        return [], "segway_plugin.Setup needs SEGWAY_PATH, the Segway build volume's mount path"
    profile = MappedPlugin(name, "profile", setup)
    profile.options = [
        ("path", "/etc/profile.d/segway.sh", setup),
        ("base", path.value, path),
        ("python_version", "2.6", setup),  # the seed plugin's PYTHON_VERSION
    ]
    profile.notes = [*_leftovers(rest), _root_profile_note()]
    motd = MappedPlugin(free_name(f"{name}-motd", taken), "motd", setup)
    motd.options = [("text", SEGWAY_BANNER.format(base=path.value), setup)]
    return [profile, motd], ""


def _root_profile_note() -> str:
    return (
        "# not carried over: the seed plugin's /root/.bash_profile prompt (cosmetic; add a "
        '[plugin.X] kind = "commands" if you want it)'
    )


def _sge(name: str, setup: Option, rest: dict[str, Option]) -> tuple[list[MappedPlugin], str]:
    plugin = MappedPlugin(name, "sge", setup)
    if (exec_host := rest.pop("master_is_exec_host", None)) is not None:
        # SGEPlugin's own test: str(value).lower() == "true"
        plugin.options.append(("head_is_exec_host", exec_host.value.lower() == "true", exec_host))
    if (slots := rest.pop("slots_per_host", None)) is not None:
        plugin.notes.append(
            f"# not carried over: SLOTS_PER_HOST = {printable(slots.value)} (set node_slots "
            "in each [cluster.X] that uses this plugin: the slots one node offers)"
        )
    plugin.notes += _leftovers(rest)
    return [plugin], ""


def _packages(name: str, setup: Option, rest: dict[str, Option]) -> tuple[list[MappedPlugin], str]:
    packages = rest.pop("packages", None)
    names = [p.strip() for p in packages.value.split(",") if p.strip()] if packages else []
    if not names:
        return [], "PackageInstaller without PACKAGES installs nothing"
    bad = [p for p in names if not _PACKAGE.fullmatch(p)]
    if bad:
        return [], f"PACKAGES: not a package name: {printable(', '.join(bad))}"
    plugin = MappedPlugin(name, "commands", setup)
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -q " + " ".join(names)
    plugin.options = [("commands", ["apt-get update -q", install], packages)]
    plugin.notes = _leftovers(rest)
    return [plugin], ""


def _leftovers(rest: dict[str, Option]) -> list[str]:
    return [
        f"# not carried over: {shown(opt)} (the plugin class took it; no option of ours does)"
        for opt in rest.values()
    ]

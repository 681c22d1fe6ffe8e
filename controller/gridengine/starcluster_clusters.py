"""StarCluster's [cluster X] templates as our [cluster.X] tables. Pure.

EXTENDS becomes our `extends`: both merge a template's own settings over its parent's, so each
table carries only the settings its template sets, and the user finds the same shape. The chain
is still walked as StarCluster walks it, to refuse a missing parent or a cycle, and for the two
things that depend on the whole chain: the plugin list (StarCluster installs Grid Engine unless
DISABLE_QUEUE; here that is a plugin of kind "sge", which `run --cluster` needs) and whether an
image is set at all.

StarCluster's master is a node it launches and counts in CLUSTER_SIZE; here the head is the
machine the controller runs on, which already runs the qmaster, so CLUSTER_SIZE = N becomes
N - 1 nodes, and the MASTER_* settings have nothing to apply to.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from controller.gridengine.starcluster_draft import Draft
from controller.gridengine.starcluster_ini import Option, Section, printable, shown

CLUSTER_SETTINGS = frozenset(
    {
        "spot_bid", "cluster_size", "cluster_user", "cluster_shell", "vpc_id", "subnet_id",
        "public_ips", "master_image_id", "master_instance_type", "node_image_id",
        "node_instance_type", "availability_zone", "keyname", "extends", "volumes", "plugins",
        "permissions", "userdata_scripts", "disable_queue", "force_spot_master",
        "disable_cloudinit", "dns_prefix",
    }
)  # fmt: skip
_HEAD = "the head is the machine running the controller; nothing launches it"
_WHY_NOT = {
    "master_image_id": _HEAD,
    "master_instance_type": _HEAD,
    "force_spot_master": _HEAD,
    "cluster_shell": "the controller creates no users: cluster_user and its shell come "
    "with the image",
    "vpc_id": "the subnet names the VPC",
    "public_ips": "the head reaches nodes at their private addresses",
    "permissions": "the controller owns the nodes' security group, open to the head on "
    "ssh_port and 6444-6445; open other ports with a group of your own",
    "userdata_scripts": 'write what the scripts do as a [plugin.X] of kind "commands"',
    "disable_cloudinit": "the controller sets nodes up over SSH, not with cloud-init",
    "dns_prefix": "nodes are named as EC2 names them from their private address (ip-10-0-1-23)",
}
_BOOLEANS = {"1": True, "yes": True, "true": True, "on": True}
_BOOLEANS |= {"0": False, "no": False, "false": False, "off": False}


@dataclass
class ClusterInputs:
    """What the cluster templates refer to, already read from the rest of the file."""

    keys: dict[str, tuple[Section, dict[str, Option]]]
    volumes: set[str]
    plugins: dict[str, list[str]]  # StarCluster plugin -> ours ([] = not carried over)
    sge_plugins: set[str]  # ours of kind "sge"
    implicit_sge: str  # the name of the [plugin.X] kind = "sge" added where Grid Engine is on
    implicit_sge_used: bool = False


def convert_clusters(
    draft: Draft, clusters: dict[str, tuple[Section, dict[str, Option]]], inputs: ClusterInputs
) -> None:
    """Write a [cluster.X] table for each template; problems go to draft.errors."""
    cycles: set[frozenset[str]] = set()
    chains = {name: _chain(draft, clusters, name, cycles) for name in clusters}
    for name, (section, own) in clusters.items():
        path = ("cluster", name)
        draft.table(path, section, f"[{printable(section.header)}]")
        resolved: dict[str, Option] = {}
        for link in reversed(chains[name]):
            resolved.update(clusters[link][1])
        _Cluster(draft, path, section, inputs).convert(own, resolved)


def _chain(
    draft: Draft,
    clusters: dict[str, tuple[Section, dict[str, Option]]],
    name: str,
    cycles: set[frozenset[str]],
) -> list[str]:
    """The template and its ancestors, nearest first, as StarCluster walks EXTENDS."""
    chain = [name]
    while (extends := clusters[chain[-1]][1].get("extends")) and extends.value:
        label = f"[{printable(clusters[chain[-1]][0].header)}] {printable(extends.name)}"
        parent = extends.value
        if parent not in clusters:
            reason = (
                f"no [cluster {printable(parent)}] section to extend (StarCluster refuses it too)"
            )
            draft.error(extends, label, reason)
            break
        if parent in chain:
            members = chain[chain.index(parent) :]
            if frozenset(members) not in cycles:
                cycles.add(frozenset(members))
                cycle = " -> ".join(printable(n) for n in [*members, parent])
                reason = f"EXTENDS cycle {cycle}: break it (StarCluster refuses it too)"
                draft.error(extends, label, reason)
            break
        chain.append(parent)
    return chain


class _Cluster:
    """One template's own settings into its table."""

    def __init__(
        self, draft: Draft, path: tuple[str, ...], section: Section, inputs: ClusterInputs
    ):
        self.draft, self.path, self.section, self.inputs = draft, path, section, inputs

    def label(self, option: Option) -> str:
        return f"[{printable(self.section.header)}] {printable(option.name)}"

    def emit(self, key: str, value: object, option: Option, note: str = "") -> None:
        self.draft.emit(self.path, key, value, option, self.label(option), note)

    def error(self, option: Option, reason: str) -> None:
        self.draft.error(option, self.label(option), reason)

    def convert(self, own: dict[str, Option], resolved: dict[str, Option]) -> None:
        for key, option in own.items():
            if key in _CARRIED and not option.value and key != "volumes":
                continue  # empty: as if unset, the default applies
            if key in _CARRIED:
                _CARRIED[key](self, option)
            elif key == "disable_queue" and _boolean(option.value) is None:
                self.error(option, f"expected True or False (got {printable(option.value)!r})")
            elif key in _WHY_NOT:
                self.draft.not_carried(self.path, shown(option), _WHY_NOT[key])
            elif key not in ("plugins", "disable_queue", "extends"):
                why = "not a setting of StarCluster's [cluster] either: it ignored it too"
                self.draft.not_carried(self.path, shown(option), why)
        has_parent = bool(own.get("extends") and own["extends"].value)
        if "plugins" in own or "disable_queue" in own or not has_parent:
            self.plugins(own, resolved)
        if not (resolved.get("node_image_id") and resolved["node_image_id"].value):
            self.draft.comment(
                self.path,
                "image_id: StarCluster required NODE_IMAGE_ID and this template has none: set "
                f"image_id before `controller run --cluster {self.path[1]}`",
            )

    def extends(self, option: Option) -> None:
        self.emit("extends", option.value, option)

    def text(self, option: Option) -> None:
        """The settings that keep their value and only change their name."""
        key = {"node_image_id": "image_id", "subnet_id": "subnet"}.get(option.name.lower())
        self.emit(key or option.name.lower(), option.value, option)

    def spot_bid(self, option: Option) -> None:
        bid = _float(option.value)
        if bid is None or bid <= 0:
            reason = f"expected US dollars per hour above 0 (got {printable(option.value)!r})"
            self.error(option, reason)
        else:
            self.emit("spot_bid", bid, option, "max $/h per node")

    def cluster_size(self, option: Option) -> None:
        size = _integer(option.value)
        if size is None or size < 1:
            got = printable(option.value)
            self.error(
                option, f"expected a whole number of nodes, counting the master (got {got!r})"
            )
            return
        note = f"StarCluster's CLUSTER_SIZE = {size} counts its master: the head here"
        self.emit("cluster_size", size - 1, option, note)
        self.draft.comment(
            self.path,
            f"to follow the queue as `starcluster loadbalance` did, replace cluster_size with "
            f"min_nodes = 0 and max_nodes = {size - 1}",
        )

    def instance_types(self, option: Option) -> None:
        """StarCluster's list: `TYPE[:IMAGE][:COUNT]` for the first nodes, then the type of
        all the others. Ours: that last type, then the rest tried in order on capacity errors."""
        items = [item.strip() for item in option.value.split(",") if item.strip()]
        if not items:
            return
        types = list(
            dict.fromkeys([items[-1], *(item.split(":")[0].strip() for item in items[:-1])])
        )
        if len(types) == 1:
            self.emit("node_instance_type", types[0], option)
        else:
            self.emit(
                "node_instance_types", types, option, "tried in order when EC2 has no capacity"
            )
        if items[:-1]:
            what = f"{printable(option.name)} entries {printable(', '.join(items[:-1]))}"
            why = (
                "the first nodes' own types, images and counts: here every node is "
                f"{printable(types[0])}, the others are its fallbacks"
            )
            self.draft.not_carried(self.path, what, why)

    def key(self, option: Option) -> None:
        found = self.inputs.keys.get(option.value)
        if found is None:
            self.error(
                option, f"no [key {printable(option.value)}] section (StarCluster refuses it too)"
            )
            return
        section, options = found
        location = options.get("key_location")
        if location is None or not location.value:
            reason = "no KEY_LOCATION, the private key file (StarCluster requires it)"
            self.draft.error(section, f"[{printable(section.header)}]", reason)
            return
        note = "the head logs in to nodes with it"
        self.emit("ssh_key_file", location.value, location, note)
        why = "nodes get ssh_key_file's public key instead: copy that key to the head"
        if re.search(r"[~$]", location.value):
            why += " and write its absolute path (StarCluster expanded ~ and $VARS)"
        self.draft.not_carried(
            self.path,
            f"{printable(option.name)} = {printable(option.value)} as an EC2 key pair",
            why,
        )

    def volumes(self, option: Option) -> None:
        names = list(dict.fromkeys(v.strip() for v in option.value.split(",") if v.strip()))
        for name in names:
            if name not in self.inputs.volumes:
                self.error(
                    option, f"no [volume {printable(name)}] section (StarCluster refuses it too)"
                )
        self.emit("volumes", names, option)

    def plugins(self, own: dict[str, Option], resolved: dict[str, Option]) -> None:
        """The whole chain's PLUGINS, mapped to ours, plus Grid Engine unless DISABLE_QUEUE.
        A problem is reported by the template that wrote the setting."""
        listed = resolved.get("plugins")
        names = [p.strip() for p in listed.value.split(",") if p.strip()] if listed else []
        queue = resolved.get("disable_queue")
        disabled = bool(queue and _boolean(queue.value))
        ours: list[str] = []
        for name in dict.fromkeys(names):
            mapped = self.inputs.plugins.get(name)
            if mapped is None and listed is own.get("plugins"):
                assert listed is not None
                self.error(
                    listed, f"no [plugin {printable(name)}] section (StarCluster refuses it too)"
                )
            elif not mapped:
                self.draft.not_carried(
                    self.path,
                    f"plugin {printable(name)}",
                    "its [plugin] section is not carried over: see the top of this file",
                )
            ours += mapped or []
        if disabled:
            if queue is own.get("disable_queue"):
                why = '`controller run --cluster` needs Grid Engine: add a [plugin.X] kind = "sge"'
                self.draft.not_carried(self.path, shown(queue), why)
        elif not any(p in self.inputs.sge_plugins for p in ours):
            ours.append(self.inputs.implicit_sge)  # last: a node joins the queue once set up
            self.inputs.implicit_sge_used = True
        note = "Grid Engine last, as StarCluster installed it" if not disabled else ""
        where = own.get("plugins") or own.get("disable_queue")
        label = self.label(where) if where else f"[{printable(self.section.header)}]"
        self.draft.emit(self.path, "plugins", ours, where or self.section, label, note)


_CARRIED = {
    "extends": _Cluster.extends,
    "cluster_size": _Cluster.cluster_size,
    "spot_bid": _Cluster.spot_bid,
    "node_image_id": _Cluster.text,
    "availability_zone": _Cluster.text,
    "subnet_id": _Cluster.text,
    "cluster_user": _Cluster.text,
    "node_instance_type": _Cluster.instance_types,
    "keyname": _Cluster.key,
    "volumes": _Cluster.volumes,
}


def _integer(text: str) -> int | None:
    if not re.fullmatch(r"[+-]?[0-9]{1,18}", text.strip()):
        return None
    return int(text)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _boolean(text: str) -> bool | None:
    return _BOOLEANS.get(text.strip().lower())

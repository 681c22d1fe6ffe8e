"""A StarCluster config in, the equivalent TOML config out (`controller import-conf --starcluster`).

The file is read as StarCluster reads it (controller.gridengine.starcluster_ini), its [global]
INCLUDE files appended. Its sections become ours: [cluster X] templates become [cluster.X]
(starcluster_clusters), [volume X] and [vol X] become [volume.X] (VOLUME_ID stays the volume the
head shares over NFS, as StarCluster's master did), [plugin X] become [plugin.X] where one of our
kinds does the same (starcluster_plugins), [key X] gives a cluster its ssh_key_file, and
[aws info] its region and endpoint. Everything else gets one `# not carried over: ... (why)`
line, so nothing is lost silently; AWS keys and passwords are named there but never copied: the
controller takes credentials from the standard AWS chain only.

Every problem is one `FILE:LINE: [section] KEY: reason` line, whether found while reading or by
checking the result as `check-config` would. Pure: text in, text out; INCLUDE files come
through a `read_include` callable.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable

from controller.config.checks import TAG_SAFE, TAG_SAFE_REASON
from controller.config.plugins import PluginError, cluster_plugins
from controller.config.reader import ConfigError, parse_config
from controller.gridengine.starcluster_clusters import (
    CLUSTER_SETTINGS,
    ClusterInputs,
    convert_clusters,
)
from controller.gridengine.starcluster_draft import Draft
from controller.gridengine.starcluster_ini import Option, Section, printable, read_ini, shown
from controller.gridengine.starcluster_plugins import MappedPlugin, free_name, map_plugin

Named = dict[str, tuple[Section, dict[str, Option]]]  # name -> (section, its settings)

_GLOBAL_WHY = {
    "enable_experimental": "spot bids and nodes that follow the queue need no switch here",
    "refresh_interval": "a setting of StarCluster's own commands",
    "web_browser": "a setting of StarCluster's own commands",
}
_CREDENTIALS = (
    "credentials never go in the config: the standard AWS chain gives them (environment, "
    "shared profile, SSO, instance role); value not copied"
)
_AWS_WHY = {
    "aws_access_key_id": _CREDENTIALS,
    "aws_secret_access_key": _CREDENTIALS,
    "aws_user_id": "not needed; value not copied",
    "ec2_cert": "only StarCluster's S3 image commands used it",
    "ec2_private_key": "only StarCluster's S3 image commands used it",
    "aws_s3_host": "the controller uses no S3",
    "aws_s3_path": "the controller uses no S3",
    "aws_proxy": "set HTTPS_PROXY in the controller's environment; value not copied",
    "aws_proxy_port": "set HTTPS_PROXY in the controller's environment; value not copied",
    "aws_proxy_user": "set HTTPS_PROXY in the controller's environment; value not copied",
    "aws_proxy_pass": "set HTTPS_PROXY in the controller's environment; value not copied",
    "aws_validate_certs": "certificates are always verified (AWS_CA_BUNDLE names a CA)",
}
_ENDPOINT_KEYS = ("aws_region_host", "aws_port", "aws_is_secure", "aws_ec2_path")
_KNOWN = {
    "global": {"default_template", "include", *_GLOBAL_WHY},
    "aws info": {"aws_region_name", *_ENDPOINT_KEYS, *_AWS_WHY},
    "cluster": CLUSTER_SETTINGS,
    "key": {"key_location"},
    "volume": {"volume_id", "device", "partition", "mount_path"},
    "plugin": {"setup_class"},
    "permission": {"ip_protocol", "from_port", "to_port", "cidr_ip"},
}
# StarCluster finds these sections by the start of their header, and names them by its 2nd word.
_PREFIXES = (
    ("cluster", "cluster"),
    ("key", "key"),
    ("vol", "volume"),
    ("plugin", "plugin"),
    ("permission", "permission"),
)
_NO_FETCH = "a URL is not fetched: download it and INCLUDE the file"


def convert_starcluster_config(
    text: str, source: str, read_include: Callable[[str], str] | None = None
) -> str:
    """The TOML equivalent of a StarCluster config; ConfigError with `FILE:LINE:` lines if it
    cannot be read or used. `read_include(path)` returns an INCLUDE file's text or raises
    OSError; without it INCLUDE is refused."""
    chunks = [(source, text)]
    sections = read_ini(chunks)
    include = sections["global"].options.get("include") if "global" in sections else None
    paths = [p.strip() for p in include.value.split(",") if p.strip()] if include else []
    for path in paths:
        assert include is not None
        label = f"[global] {printable(include.name)}"
        if "://" in path:
            reason = f"{printable(path)}: {_NO_FETCH}"
            raise ConfigError([f"{include.source}:{include.line}: {label}: {reason}"])
        try:
            if read_include is None:
                raise OSError("no file access here")
            chunks.append((path, read_include(path)))
        except OSError as exc:
            reason = f"cannot read {printable(path)}: {exc.strerror or exc}"
            raise ConfigError([f"{include.source}:{include.line}: {label}: {reason}"]) from None
    if paths:
        sections = read_ini(chunks)

    draft = Draft(source)
    groups = _classify(draft, sections)
    whole_file = Section("", source, 0)
    draft.table(("controller",), whole_file, "")
    fleet_note = "one fleet per running cluster: adoption and teardown go by it"
    draft.emit(("controller",), "fleet", "starcluster", whole_file, "", fleet_note)
    _convert_global(draft, groups["global"], paths)
    _convert_aws(draft, groups["aws info"])
    mapped, inputs = _map_plugins(draft, groups)
    convert_clusters(draft, groups["cluster"], inputs)
    _convert_volumes(draft, groups["volume"])
    _write_plugins(draft, mapped, inputs)
    _keys_unused(draft, groups)
    for section, _ in groups["permission"].values():
        why = (
            "the controller owns the nodes' security group, open to the head; open other "
            "ports with a group of your own"
        )
        draft.not_carried(None, f"[{printable(section.header)}]", why)
    if draft.errors:
        raise ConfigError(draft.errors)
    output = draft.render(_heading(source))
    _check(draft, output)
    return output


def _classify(draft: Draft, sections: dict[str, Section]) -> dict[str, Named]:
    """Sections by kind, as StarCluster finds them; [DEFAULT]'s settings added to each section
    that reads them (ConfigParser's defaults), other unknown sections noted."""
    groups: dict[str, Named] = {kind: {} for kind in _KNOWN}
    defaults = sections.pop("DEFAULT", Section("DEFAULT", draft.source, 0)).options
    for header, section in sections.items():
        kind, name = _kind(header)
        if kind is None:
            why = "StarCluster does not read this section either"
            draft.not_carried(None, f"[{printable(header)}]", why)
            continue
        label = f"[{printable(header)}]"
        if not name and kind not in ("global", "aws info"):
            draft.error(section, label, f"expected [{kind} NAME]: the section needs a name")
            continue
        if kind in ("cluster", "volume", "plugin") and not TAG_SAFE.fullmatch(name):
            reason = f"the name {printable(name)!r} {TAG_SAFE_REASON}: rename it where it is used"
            draft.error(section, label, reason)
        elif name in groups[kind]:
            first = groups[kind][name][0]
            reason = f"{kind} {printable(name)} is also defined on line {first.line}: keep one"
            draft.error(section, label, reason)
        known = {k: o for k, o in defaults.items() if k in _KNOWN[kind]}
        groups[kind][name] = (section, known | section.options)
    for key, option in defaults.items():
        if not any(key in settings for settings in _KNOWN.values()):
            what = f"[DEFAULT] {shown(option)}"
            draft.not_carried(None, what, "no StarCluster section reads it")
    return groups


def _kind(header: str) -> tuple[str | None, str]:
    if header in ("global", "aws info"):
        return header, ""
    words = header.split()
    for prefix, kind in _PREFIXES:
        if header.startswith(prefix):
            return kind, words[1] if len(words) > 1 else ""
    return None, ""


def _convert_global(draft: Draft, named: Named, includes: list[str]) -> None:
    for _, options in named.values():
        for key, option in options.items():
            what = f"[global] {shown(option)}"
            if key == "include":
                read = ", ".join(printable(p) for p in includes) or "nothing"
                draft.comment(None, f"[global] INCLUDE: read {read}; converted with this file")
            elif key == "default_template":
                why = (
                    f"name the cluster to run: `controller run --cluster {printable(option.value)}`"
                )
                draft.not_carried(None, what, why)
            else:
                why = _GLOBAL_WHY.get(key, "not a StarCluster [global] setting either")
                draft.not_carried(None, what, why)


def _convert_aws(draft: Draft, named: Named) -> None:
    """Region and a non-AWS endpoint are carried; nothing else, and no value is ever shown."""
    for section, options in named.values():
        region = options.get("aws_region_name")
        if region and region.value:
            draft.table(("slave",), section, "[aws info]")
            note = "the region of every instance it launches, nodes included"
            label = f"[aws info] {printable(region.name)}"
            draft.emit(("slave",), "region", region.value, region, label, note)
        endpoint = _endpoint(options)
        host = options.get("aws_region_host")
        if endpoint and host:
            draft.table(("aws",), section, "[aws info]")
            label = f"[aws info] {printable(host.name)}"
            draft.emit(("aws",), "endpoint_url", endpoint, host, label, "an EC2-compatible cloud")
        for key, option in options.items():
            what = f"[aws info] {printable(option.name)}"
            if key in _ENDPOINT_KEYS and not endpoint:
                draft.not_carried(None, what, "AWS's own endpoint for the region is used")
            elif key not in ("aws_region_name", *_ENDPOINT_KEYS):
                why = _AWS_WHY.get(key, "not a StarCluster [aws info] setting; value not copied")
                draft.not_carried(None, what, why)


def _endpoint(options: dict[str, Option]) -> str:
    """AWS_REGION_HOST as an endpoint URL when it is not AWS's own (Eucalyptus, an emulator)."""
    host = options.get("aws_region_host")
    if host is None or not host.value or host.value.endswith((".amazonaws.com", ".com.cn")):
        return ""
    secure = options.get("aws_is_secure")
    insecure = secure is not None and secure.value.strip().lower() in ("0", "no", "false", "off")
    scheme = "http" if insecure else "https"
    port = options.get("aws_port")
    path = options.get("aws_ec2_path")
    url = f"{scheme}://{host.value}"
    if port and port.value.strip().isdigit():
        url += f":{int(port.value)}"
    if path and path.value not in ("", "/"):
        url += path.value if path.value.startswith("/") else "/" + path.value
    return url


def _map_plugins(
    draft: Draft, groups: dict[str, Named]
) -> tuple[list[MappedPlugin], ClusterInputs]:
    """Our plugins for each StarCluster plugin, and what the clusters need to refer to them."""
    named = groups["plugin"]
    taken = set(named)  # added names must not take a later StarCluster plugin's
    plugins: dict[str, list[str]] = {}
    mapped: list[MappedPlugin] = []
    for name, (section, options) in named.items():
        label = f"[{printable(section.header)}]"
        if not (options.get("setup_class") and options["setup_class"].value):
            draft.error(section, label, "no SETUP_CLASS (StarCluster requires it)")
            plugins[name] = []
            continue
        ours, why = map_plugin(name, options, taken)
        if not ours:
            draft.not_carried(None, label, why)
        plugins[name] = [p.name for p in ours]
        mapped += ours
    inputs = ClusterInputs(
        keys=groups["key"],
        volumes=set(groups["volume"]),
        plugins=plugins,
        sge_plugins={p.name for p in mapped if p.kind == "sge"},
        implicit_sge=free_name("sge", taken),
    )
    return mapped, inputs


def _write_plugins(draft: Draft, mapped: list[MappedPlugin], inputs: ClusterInputs) -> None:
    for plugin in mapped:
        path = ("plugin", plugin.name)
        label = f"[plugin {printable(plugin.name)}] {printable(plugin.origin.name)}"
        draft.table(path, plugin.origin, label)
        draft.emit(path, "kind", plugin.kind, plugin.origin, label, printable(plugin.origin.value))
        for key, value, origin in plugin.options:
            where = f"[plugin {printable(plugin.name)}] {printable(origin.name)}"
            draft.emit(path, key, value, origin, where)
        draft.tables[path] += plugin.notes
    if inputs.implicit_sge_used:
        path = ("plugin", inputs.implicit_sge)
        where = Section("", draft.source, 0)
        draft.table(path, where, f"[plugin.{inputs.implicit_sge}]")
        note = "StarCluster's Grid Engine set-up (unless DISABLE_QUEUE)"
        draft.emit(path, "kind", "sge", where, "", note)
        draft.comment(path, "the head is an exec host too, as StarCluster's master was")


def _convert_volumes(draft: Draft, named: Named) -> None:
    for name, (section, options) in named.items():
        path = ("volume", name)
        label = f"[{printable(section.header)}]"
        draft.table(path, section, label)
        for key, required in (("volume_id", "VOLUME_ID"), ("mount_path", "MOUNT_PATH")):
            option = options.get(key)
            if option is None or not option.value:
                draft.error(section, label, f"no {required} (StarCluster requires it)")
            else:
                draft.emit(path, key, option.value, option, f"{label} {printable(option.name)}")
        draft.comment(
            path,
            "the head mounts it and exports mount_path over NFS, as StarCluster's master did (not "
            "the controller); or write snapshot_id: a copy per node",
        )
        for key, option in options.items():
            if key in ("device", "partition"):
                draft.not_carried(path, shown(option), "the head mounts the volume itself")
            elif key not in ("volume_id", "mount_path"):
                draft.not_carried(path, shown(option), "not a StarCluster [volume] setting either")


def _keys_unused(draft: Draft, groups: dict[str, Named]) -> None:
    used = {
        options["keyname"].value
        for _, options in groups["cluster"].values()
        if "keyname" in options
    }
    for name, (section, options) in groups["key"].items():
        for key, option in options.items():
            what = f"[{printable(section.header)}] {shown(option)}"
            if key != "key_location":
                draft.not_carried(None, what, "not a StarCluster [key] setting either")
            elif name not in used:
                draft.not_carried(None, what, "no cluster uses this key")


def _heading(source: str) -> list[str]:
    return [
        f"# Converted by `controller import-conf --starcluster` from {printable(source, 200)}.",
        "# Each [cluster.X] is a StarCluster template: `controller run -c FILE --cluster X`.",
        "# Keys not written here take the defaults documented in config.toml;",
        "# check the result with `controller check-config -c FILE`.",
    ]


def _check(draft: Draft, output: str) -> None:
    """Validate the output as `check-config` would, reporting at the StarCluster lines."""
    try:
        config = parse_config(tomllib.loads(output), draft.source)
    except ConfigError as exc:
        raise ConfigError([draft.locate(key, reason) for key, reason in exc.problems]) from None
    problems: list[str] = []
    for cluster in config.clusters:
        try:
            cluster_plugins(config, cluster)
        except PluginError as exc:
            for line in str(exc).splitlines():
                key, _, reason = line.partition(": ")
                problem = draft.locate(key, reason)
                if problem not in problems:
                    problems.append(problem)
    if problems:
        raise ConfigError(problems)

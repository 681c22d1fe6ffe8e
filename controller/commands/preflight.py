"""What `check-config` checks beyond the config's own validity: what a real run of this config
would trip over on this machine and in AWS, found before systemd starts it (ExecStartPre). The exit
code is about the config: a valid config checked on a machine that is not ready for it yet (no
GBrowse installed, not on EC2) passes, with notes.

Problems (exit 2), since `run` would fail or leak a secret:
- [slave] region: one botocore's endpoint data knows (read locally, no network), unless
  [aws] endpoint_url names another EC2-compatible endpoint;
- image ids: a real AMI id (`ami-` and 8 or 17 hex digits), not a placeholder left from an example;
- [stats] token_file (when the endpoint listens): present, not empty, readable by this user and
  by nobody else (its group and others may not read a secret);
- a [cluster.X] whose plugins name no scheduler of its load_source (`run --cluster` refuses it
  with the same line).
Notes (exit 0):
- a blank [slave] region or image_id (or a cluster's image_id): `run` takes the master's from
  its instance metadata (controller.cloud.master_defaults), which is not asked here;
- [master] renderfarm_conf's directory does not exist (yet): `run` refuses to start until it
  does. A config with [cluster.X] sections that keeps the default path may be for
  `run --cluster` only, so there it is not mentioned;
- [master] server_status_url without `?auto`: mod_status answers HTML then, which the load
  sampler cannot read;
- an all-zero AMI id (an example's placeholder: fine for simulate and a dry run);
- the ssh_key_file of [sync] and of each [cluster.X] (only `sync-data` or `run --cluster` read
  them), checked as the token file is.

Each finding is one `FILE: key: what is wrong; what to do` line. Only check-config uses this
module: `simulate` and `--dry-run` on a laptop keep working with example configs.
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from controller.config.checks import no_scheduler_plugin, suggest
from controller.config.plugins import PluginError, cluster_plugins, sge_plugin, slurm_plugin
from controller.config.schema import Config, MasterSection

AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")
SECRET_BITS = stat.S_IRGRP | stat.S_IROTH


@functools.cache
def known_regions() -> frozenset[str]:
    """Every EC2 region of every partition in botocore's bundled endpoint data."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    regions: set[str] = set()
    for partition in resolver.get_available_partitions():
        regions.update(resolver.get_available_endpoints("ec2", partition))
    return frozenset(regions)


def preflight(config: Config, env: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) for `config`, each line naming the config file and the key."""
    env = os.environ if env is None else env
    found: list[tuple[str, str]] = []
    notes: list[tuple[str, str]] = []
    found += _region(config)
    found += _images(config)
    found += _schedulers(config)
    notes += _blank_defaults(config)
    notes += _zero_images(config)
    notes += _status_url(config)
    for key, path, user in _key_files(config):
        notes += [
            (key, f"{why} ({user} needs it)") for why in _secret_file(Path(path).expanduser())
        ]
    token_key, token_path = "stats.token_file", config.stats.token_file
    if config.stats.listen and token_path:
        credentials = env.get("CREDENTIALS_DIRECTORY", "")
        if not Path(token_path).is_absolute() and not credentials:
            notes.append((token_key, _relative_token_note(token_path)))
        else:
            where = Path(credentials, token_path) if credentials else Path(token_path)
            found += [(token_key, reason) for reason in _secret_file(where, token=True)]
    notes += _renderfarm_dir(config)
    name = config.path or "config"
    return [f"{name}: {k}: {r}" for k, r in found], [f"{name}: {k}: {r}" for k, r in notes]


def _region(config: Config) -> list[tuple[str, str]]:
    region = config.slave.region
    if not region or config.aws.endpoint_url or region in known_regions():
        return []
    return [
        (
            "slave.region",
            f"unknown region {region!r}{suggest(region, known_regions())}; set an EC2 region "
            "(`aws ec2 describe-regions`), or upgrade botocore if the region is newer than it",
        )
    ]


def _images(config: Config) -> list[tuple[str, str]]:
    images = [("slave.image_id", config.slave.image_id)]
    images += [(f"cluster.{c.name}.image_id", c.image_id) for c in config.clusters]
    return [
        (
            key,
            f"{value!r} is a placeholder, not an AMI id (ami- and 8 or 17 hex digits); set the "
            "image the instances boot from (`aws ec2 describe-images --owners self`)",
        )
        for key, value in images
        if value and not AMI_ID.fullmatch(value)
    ]


def _zero_images(config: Config) -> list[tuple[str, str]]:
    """An all-zero AMI id is an example's placeholder (config.toml's): fine to simulate or
    dry-run with, so a note; a real run would have every launch refused."""
    images = [("slave.image_id", config.slave.image_id)]
    images += [(f"cluster.{c.name}.image_id", c.image_id) for c in config.clusters]
    return [
        (key, f"{value!r} looks like an example's placeholder; set your AMI before a real run")
        for key, value in images
        if AMI_ID.fullmatch(value) and not value[4:].strip("0")
    ]


FROM_METADATA = (
    "blank: taken from the master's instance metadata at run; set it if the master is not on EC2"
)


def _blank_defaults(config: Config) -> list[tuple[str, str]]:
    """Blank region and image ids: `run` fills them on EC2 (not asked here)."""
    blank = [("slave.region", config.slave.region)]
    if not _cluster_only(config):
        blank.append(("slave.image_id", config.slave.image_id))
    blank += [(f"cluster.{c.name}.image_id", c.image_id) for c in config.clusters]
    return [(key, FROM_METADATA) for key, value in blank if not value]


def _schedulers(config: Config) -> list[tuple[str, str]]:
    """A cluster whose plugins join nodes to no scheduler: `run --cluster` refuses it."""
    found = []
    for cluster in config.clusters:
        try:
            plugins = cluster_plugins(config, cluster)
        except PluginError:
            continue  # the reader reported it already
        if sge_plugin(plugins) is None and slurm_plugin(plugins) is None:
            found.append(
                (f"[cluster.{cluster.name}] plugins", no_scheduler_plugin(cluster.load_source))
            )
    return found


def _status_url(config: Config) -> list[tuple[str, str]]:
    url = config.master.server_status_url
    if "auto" in urlsplit(url).query.split("&"):
        return []
    return [
        (
            "master.server_status_url",
            f"{url!r} does not ask for ?auto: mod_status then answers its HTML page, which the "
            "load sampler cannot read (each reading fails); add ?auto",
        )
    ]


def _cluster_only(config: Config) -> bool:
    """A batch-cluster config that never named renderfarm_conf has no render farm to run."""
    return (
        bool(config.clusters) and config.master.renderfarm_conf == MasterSection().renderfarm_conf
    )


def _key_files(config: Config) -> list[tuple[str, str, str]]:
    """(key, path, the command that reads it) of each ssh_key_file set."""
    keys = [("sync.ssh_key_file", config.sync.ssh_key_file, "sync-data")]
    keys += [
        (f"cluster.{c.name}.ssh_key_file", c.ssh_key_file, f"run --cluster {c.name}")
        for c in config.clusters
    ]
    return [(key, path, user) for key, path, user in keys if path]


def _secret_file(path: Path, token: bool = False) -> list[str]:
    """Why the secret at `path` cannot be used as it is (nothing when it can)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return [f"{path} does not exist; create it (mode 600) or fix the path"]
    except OSError as exc:
        return [f"{path}: cannot look at it ({exc.strerror}); fix the path or its directory"]
    if not stat.S_ISREG(info.st_mode):
        return [f"{path} is not a file; point the key at the file itself"]
    problems = []
    if info.st_mode & SECRET_BITS:
        problems.append(
            f"{path} is readable by its group or others (mode {stat.S_IMODE(info.st_mode):04o});"
            f" chmod 600 {path} (owned by the user the controller runs as)"
        )
    if not os.access(path, os.R_OK):
        problems.append(
            f"{path} cannot be read by {getpass.getuser()}; chown it to the user the "
            "controller runs as (check-config reads it as the service would)"
        )
    elif token and info.st_size == 0:
        problems.append(f"{path} is empty; put the token in it")
    return problems


def _relative_token_note(path: str) -> str:
    return (
        f"{path!r} is relative: the service reads it from systemd's $CREDENTIALS_DIRECTORY "
        f"(LoadCredential={path}:/etc/controller/{path}), so it is checked there, not here"
    )


def _renderfarm_dir(config: Config) -> list[tuple[str, str]]:
    if _cluster_only(config):
        return []
    directory = Path(config.master.renderfarm_conf).parent
    if directory.is_dir():
        return []
    return [
        (
            "master.renderfarm_conf",
            f"directory {directory} does not exist (yet): `run` refuses to start until it does; "
            "install GBrowse there or set renderfarm_conf to GBrowse's renderfarm.conf on this "
            "machine",
        )
    ]

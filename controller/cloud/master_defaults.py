"""[slave] region, image_id and subnet left blank: the master's own, from its instance metadata.

The seed's rule for a master on EC2: a blank region is the master's region (`placement/region`),
a blank image_id the AMI the master was launched from (`ami-id`), a blank subnet the master's VPC
subnet (`mac` -> `network/interfaces/macs/{mac}/subnet-id`). A [cluster.X]'s blank image_id and
subnet are filled the same way; its region is [slave]'s. Off EC2 (AWS_EC2_METADATA_DISABLED, or no
answer within a second), a blank region or image_id is one line saying to set it; a blank subnet
stays "" (the default VPC), as does the subnet of a master outside any VPC.

The commands that talk to EC2 fill the config once, before anything uses it, and log what they
took; a SIGHUP reload refills a new config's blanks with the same values (`fill_blanks`), since
the master does not move. `simulate` and `check-config` never ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from controller.cloud.instance_metadata import (
    MetadataError,
    MetadataUnreachable,
    metadata_disabled,
    metadata_session,
    metadata_url,
)
from controller.config.schema import ClusterSection, Config

REGION, IMAGE, SUBNET = "placement/region", "ami-id", "subnet"  # what the metadata answers


class MasterDefaultsError(Exception):
    """A blank key cannot be filled from the metadata: one line naming it."""


@dataclass(frozen=True, slots=True)
class Blank:
    """One blank key to fill: `key` "slave.region" or "cluster.NAME.image_id"."""

    key: str
    item: str  # REGION, IMAGE or SUBNET
    required: bool  # off EC2: a line saying to set it (else it stays "")

    @property
    def label(self) -> str:
        """The key as people read it: "[slave] region", "[cluster.small] image_id"."""
        section, _, name = self.key.rpartition(".")
        return f"[{section}] {name}"


def blanks(config: Config, *, cluster: str | None = None, launches: bool = True) -> list[Blank]:
    """Pure: the blank keys a command needs filled. Every command that talks to EC2 needs the
    region; one that `launches` also the image and subnet, of `cluster` or else of [slave]."""
    found = [Blank("slave.region", REGION, True)] if not config.slave.region else []
    if not launches:
        return found
    section = _cluster(config, cluster) if cluster is not None else config.slave
    prefix = f"cluster.{cluster}" if cluster is not None else "slave"
    if section is not None and not section.image_id:
        found.append(Blank(f"{prefix}.image_id", IMAGE, True))
    if section is not None and not section.subnet:
        found.append(Blank(f"{prefix}.subnet", SUBNET, False))
    return found


def fill_blanks(config: Config, taken: Mapping[str, str]) -> Config:
    """Pure: `config` with each key of `taken` set to its value where the config leaves it blank."""
    slave = config.slave
    for name in ("region", "image_id", "subnet"):
        value = taken.get(f"slave.{name}", "")
        if value and not getattr(slave, name):
            slave = replace(slave, **{name: value})
    clusters = tuple(_filled_cluster(c, taken) for c in config.clusters)
    return replace(config, slave=slave, clusters=clusters)


def unreachable_line(missing: list[Blank], why: str) -> str:
    """Pure: the line for required blanks that no metadata can fill."""
    labels = [b.label for b in missing]
    keys = [b.key.rpartition(".")[2] for b in missing]
    if len(missing) == 1:
        return f"{labels[0]} is blank and {why}: set {keys[0]} (the master is not on EC2)"
    return f"{' and '.join(labels)} are blank and {why}: set them (the master is not on EC2)"


def taken_text(taken: Mapping[str, str]) -> str:
    """Pure: what was filled, for the one line the caller logs or prints."""
    return ", ".join(f"{Blank(key, '', False).label} = {value}" for key, value in taken.items())


async def fill_from_metadata(
    config: Config,
    *,
    cluster: str | None = None,
    launches: bool = True,
    imds_url: str | None = None,
    timeout: float | None = None,
) -> tuple[Config, dict[str, str]]:
    """`config` with the blanks of `blanks()` filled, and what was taken ({} when nothing was
    blank: the metadata is not asked then). MasterDefaultsError when a required one cannot be."""
    wanted = blanks(config, cluster=cluster, launches=launches)
    if not wanted:
        return config, {}
    required = [b for b in wanted if b.required]
    why = "this machine's instance metadata is not reachable"
    try:
        if metadata_disabled():
            why += " (AWS_EC2_METADATA_DISABLED=true)"
            raise MetadataUnreachable(why)
        url = imds_url or metadata_url()
        taken = await _read(url, wanted, timeout)
    except MetadataUnreachable:
        if required:
            raise MasterDefaultsError(unreachable_line(required, why)) from None
        return config, {}  # a blank subnet off EC2: the default VPC
    except MetadataError as exc:
        keys = " and ".join(b.label for b in wanted)
        raise MasterDefaultsError(f"{exc}: set {keys} in the config") from None
    for blank in required:
        if not taken.get(blank.key):
            raise MasterDefaultsError(
                f"{blank.label} is blank and the instance metadata at {url} has no {blank.item}:"
                f" set {blank.key.rpartition('.')[2]}"
            )
    return fill_blanks(config, taken), taken


async def _read(url: str, wanted: list[Blank], timeout: float | None) -> dict[str, str]:
    """key -> value for each blank the metadata answers ("" when it has no such item)."""
    kwargs = {} if timeout is None else {"request_seconds": timeout}
    values: dict[str, str] = {}
    async with metadata_session(url, **kwargs) as get:
        for item in dict.fromkeys(b.item for b in wanted):
            if item == SUBNET:
                mac = await get("mac")
                values[item] = await get(f"network/interfaces/macs/{mac}/subnet-id") if mac else ""
            else:
                values[item] = await get(item)
    return {b.key: values[b.item] for b in wanted if values[b.item]}


def _cluster(config: Config, name: str) -> ClusterSection | None:
    return next((c for c in config.clusters if c.name == name), None)


def _filled_cluster(cluster: ClusterSection, taken: Mapping[str, str]) -> ClusterSection:
    for name in ("image_id", "subnet"):
        value = taken.get(f"cluster.{cluster.name}.{name}", "")
        if value and not getattr(cluster, name):
            cluster = replace(cluster, **{name: value})
    return cluster

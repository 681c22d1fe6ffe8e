"""The master's address as the slaves see it: the one source the security group admits (/32).

In order:
1. `[master] external_ip`, when set, as is.
2. On EC2, the instance metadata service (controller.cloud.instance_metadata: IMDSv2, botocore's
   AWS_EC2_METADATA_DISABLED and AWS_EC2_METADATA_SERVICE_ENDPOINT honoured). The address is
   always `local-ipv4`: the controller reaches the slaves at their *private* addresses
   (renderfarm.conf, the health probes, SSH to cluster nodes), so its packets leave from its own
   private address, whether the slaves share its VPC or sit in a peered one; its `public-ipv4`
   is never their source, and admitting it would drop every probe (slaves launched, timed out,
   terminated, paid for).
   A master without `local-ipv4` is an error, not a fall back to the public address.
   When both VPCs are known (the slaves': `Cloud.subnet_vpc`, "" subnet = the default VPC; the
   master's: metadata `mac` -> `network/interfaces/macs/{mac}/vpc-id`) and they differ, the
   result carries a warning: the VPCs must be peered or routed.
3. `[master] external_ip_lookup_url`, an explicit opt-in: a GET whose body is the address.
   No public web service is ever asked unless the config names it.

Anything else is a `MasterAddressError` with one line saying what to set. The result says where
the address came from and why, for the line the controller logs at start.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import aiohttp

from controller.cloud.instance_metadata import (
    MetadataError,
    MetadataUnreachable,
    metadata_disabled,
    metadata_session,
    metadata_url,
)
from controller.config.schema import Config

LOOKUP_TIMEOUT = 5.0  # seconds at least for a configured lookup URL, often a public web service
PRIVATE_REASON = (
    "slaves are reached at their private addresses, so the master's packets leave from its "
    "private address"
)

SlaveVpc = Callable[[], Awaitable[str | None]]


class MasterAddressError(Exception):
    """The master's address cannot be found or is not an IP address."""


@dataclass(frozen=True, slots=True)
class MasterAddress:
    """The address the group admits, where it came from and why (logged once at start)."""

    ip: str
    source: str  # "[master] external_ip", "instance metadata local-ipv4", or the lookup URL
    reason: str
    warning: str = ""  # something the operator must check, e.g. the VPCs differ


async def discover_master_ip(
    config: Config,
    *,
    imds_url: str | None = None,  # None: AWS_EC2_METADATA_SERVICE_ENDPOINT or EC2's
    timeout: float = 1.0,  # seconds per request, not for the whole call
    slave_vpc: SlaveVpc | None = None,  # the slaves' VPC, asked only when metadata answers
) -> MasterAddress:
    """The master's IPv4 or IPv6 address, normalised (see the module docstring for the order)."""
    configured = config.master.external_ip.strip()
    if configured:
        source = "[master] external_ip"
        return MasterAddress(
            _validated(configured, _where(config, source)), source, "set in the config"
        )
    imds_url = imds_url or metadata_url()
    lookup_url = config.master.external_ip_lookup_url.strip()
    if metadata_disabled():
        not_found = "instance metadata is disabled by AWS_EC2_METADATA_DISABLED"
    else:
        try:
            return await _from_metadata(imds_url, timeout, slave_vpc)
        except MetadataUnreachable:
            not_found = "not on EC2"
    if lookup_url:
        source = f"[master] external_ip_lookup_url {lookup_url}"
        address = await _from_lookup(lookup_url, max(timeout, LOOKUP_TIMEOUT))
        reason = f"{not_found}; the configured lookup URL names the address"
        return MasterAddress(_validated(address, _where(config, source)), source, reason)
    line = (
        "cannot tell the master's address: set [master] external_ip "
        f"({not_found}, and no external_ip_lookup_url configured)"
    )
    raise MasterAddressError(_where(config, line))


def choose_metadata_address(
    *, local_ipv4: str, public_ipv4: str, master_vpc_id: str, slave_vpc_id: str, imds_url: str
) -> MasterAddress:
    """Pure: the address the slaves see, from what the metadata service said (module rule)."""
    if not local_ipv4:
        public = (
            f" (only public-ipv4 {public_ipv4}, which is never the source)" if public_ipv4 else ""
        )
        raise MasterAddressError(
            f"instance metadata at {imds_url} has no local-ipv4{public}: the slaves are reached "
            "at their private addresses, so set [master] external_ip to the address they see"
        )
    reason = PRIVATE_REASON
    if public_ipv4:
        reason += f" (not its public-ipv4 {public_ipv4})"
    warning = ""
    if master_vpc_id and slave_vpc_id and master_vpc_id != slave_vpc_id:
        warning = (
            f"the master is in {master_vpc_id}, the slaves in {slave_vpc_id}: the controller "
            "reaches the slaves at their private addresses, so the two VPCs must be peered "
            "(or routed, e.g. through a transit gateway)"
        )
    return MasterAddress(local_ipv4, "instance metadata local-ipv4", reason, warning)


def _where(config: Config, text: str) -> str:
    return f"{config.path}: {text}" if config.path else text


def _validated(text: str, source: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise MasterAddressError(
            f"{source}: {text.strip()[:60]!r} is not an IPv4 or IPv6 address"
        ) from None


async def _from_metadata(
    imds_url: str, request_seconds: float, slave_vpc: SlaveVpc | None
) -> MasterAddress:
    try:
        async with metadata_session(imds_url, request_seconds) as get:
            local_ipv4 = await get("local-ipv4")
            public_ipv4 = await get("public-ipv4")
            mac = await get("mac")
            master_vpc_id = await get(f"network/interfaces/macs/{mac}/vpc-id") if mac else ""
    except MetadataError as exc:
        raise MasterAddressError(str(exc)) from None
    # After the metadata session: an EC2 call with its retries may outlive the token.
    slave_vpc_id = (await slave_vpc() or "") if slave_vpc is not None else ""
    found = choose_metadata_address(
        local_ipv4=local_ipv4,
        public_ipv4=public_ipv4,
        master_vpc_id=master_vpc_id,
        slave_vpc_id=slave_vpc_id,
        imds_url=imds_url,
    )
    return replace(found, ip=_validated(found.ip, f"instance metadata at {imds_url}"))


async def _from_lookup(url: str, request_seconds: float) -> str:
    client_timeout = aiohttp.ClientTimeout(total=request_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise MasterAddressError(
                    f"[master] external_ip_lookup_url {url} answered HTTP {response.status}"
                )
            return (await response.text()).strip()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MasterAddressError(
            f"[master] external_ip_lookup_url {url} failed: {exc or type(exc).__name__}; "
            "set [master] external_ip"
        ) from None

"""The master's address as the slaves see it: the one source the security group admits (/32).

In order:
1. `[master] external_ip`, when set.
2. On EC2, the instance metadata service (IMDSv2: a session token from PUT /latest/api/token,
   then GETs carrying it), unless AWS_EC2_METADATA_DISABLED=true. Which address, by this rule:
   the controller writes the slaves' *private* addresses into renderfarm.conf, so a master in the
   slaves' VPC connects over the VPC and the slaves see its private address (`local-ipv4`).
   A master in another VPC or region reaches them through its public address (`public-ipv4`),
   and one without a public address (peering, VPN) through its private address again. Pass
   `slave_vpc_id` (the VPC of `[slave] subnet`, `Cloud.subnet_vpc`) so the rule can tell;
   without it the public address wins when there is one.
3. `[master] external_ip_lookup_url`, an explicit opt-in: a GET whose body is the address.
   No public web service is ever asked unless the config names it.

Anything else is a `MasterAddressError` with one line saying what to set.
"""

from __future__ import annotations

import ipaddress
import os

import aiohttp

from controller.config import Config

IMDS_URL = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 60  # the token is used for a handful of GETs right away
LOOKUP_TIMEOUT = 5.0  # seconds at least for a configured lookup URL, often a public web service


class MasterAddressError(Exception):
    """The master's address cannot be found or is not an IP address."""


class _NoMetadata(Exception):
    """The metadata service did not answer: not on EC2 (or it is blocked)."""


async def discover_master_ip(
    config: Config,
    *,
    imds_url: str = IMDS_URL,
    timeout: float = 1.0,  # seconds per request, not for the whole call
    slave_vpc_id: str = "",
) -> str:
    """The master's IPv4 or IPv6 address, normalised (see the module docstring for the order)."""
    configured = config.master.external_ip.strip()
    if configured:
        return _validated(configured, _where(config, "[master] external_ip"))
    lookup_url = config.master.external_ip_lookup_url.strip()
    if metadata_disabled():
        not_found = "instance metadata is disabled by AWS_EC2_METADATA_DISABLED"
    else:
        try:
            address = await _from_metadata(imds_url, timeout, slave_vpc_id)
        except _NoMetadata:
            not_found = "not on EC2"
        else:
            return _validated(address, f"instance metadata at {imds_url}")
    if lookup_url:
        source = _where(config, f"[master] external_ip_lookup_url {lookup_url}")
        return _validated(await _from_lookup(lookup_url, max(timeout, LOOKUP_TIMEOUT)), source)
    line = (
        "cannot tell the master's address: set [master] external_ip "
        f"({not_found}, and no external_ip_lookup_url configured)"
    )
    raise MasterAddressError(_where(config, line))


def metadata_disabled() -> bool:
    """botocore's own switch: when set, nothing may ask the metadata service."""
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true"


def choose_metadata_address(
    *, local_ipv4: str, public_ipv4: str, master_vpc_id: str, slave_vpc_id: str
) -> str:
    """Pure: the address the slaves see, from what the metadata service said (module rule)."""
    if slave_vpc_id and master_vpc_id == slave_vpc_id:
        return local_ipv4
    return public_ipv4 or local_ipv4


def _where(config: Config, text: str) -> str:
    return f"{config.path}: {text}" if config.path else text


def _validated(text: str, source: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise MasterAddressError(
            f"{source}: {text.strip()[:60]!r} is not an IPv4 or IPv6 address"
        ) from None


async def _from_metadata(imds_url: str, request_seconds: float, slave_vpc_id: str) -> str:
    base = imds_url.rstrip("/")
    client_timeout = aiohttp.ClientTimeout(total=request_seconds)
    # trust_env stays off: a proxy from the environment must never see metadata requests.
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        try:
            async with session.put(
                f"{base}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
            ) as response:
                if response.status != 200:
                    raise _NoMetadata(f"token request answered {response.status}")
                token = (await response.text()).strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _NoMetadata(str(exc)) from None

        async def get(path: str) -> str:
            """One metadata item, "" when the instance has none (404)."""
            try:
                async with session.get(
                    f"{base}/latest/meta-data/{path}",
                    headers={"X-aws-ec2-metadata-token": token},
                ) as response:
                    if response.status == 404:
                        return ""
                    if response.status != 200:
                        raise MasterAddressError(
                            f"instance metadata at {imds_url}: {path} answered {response.status}"
                        )
                    return (await response.text()).strip()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MasterAddressError(
                    f"instance metadata at {imds_url}: {path} failed: {exc or type(exc).__name__}"
                ) from None

        local_ipv4 = await get("local-ipv4")
        public_ipv4 = await get("public-ipv4")
        master_vpc_id = ""
        if slave_vpc_id:
            mac = await get("mac")
            if mac:
                master_vpc_id = await get(f"network/interfaces/macs/{mac}/vpc-id")
    address = choose_metadata_address(
        local_ipv4=local_ipv4,
        public_ipv4=public_ipv4,
        master_vpc_id=master_vpc_id,
        slave_vpc_id=slave_vpc_id,
    )
    if not address:
        raise MasterAddressError(
            f"instance metadata at {imds_url} has neither local-ipv4 nor public-ipv4: "
            "set [master] external_ip"
        )
    return address


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

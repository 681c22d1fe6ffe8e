"""The master's address against a local stand-in for the EC2 metadata service (tests.harness.imds)
and a lookup URL, and through app.master_address with moto's EC2 for the slaves' VPC (the default
one when `[slave] subnet` is "")."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog.testing
from aiohttp import web

from controller.app import StartupError, master_address
from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.master_address import (
    MasterAddressError,
    choose_metadata_address,
    discover_master_ip,
)
from controller.config.schema import Config, MasterSection, SlaveSection
from tests.harness.imds import MAC, FakeImds
from tests.harness.moto_server import MotoEc2
from tests.harness.net import free_port


@dataclass
class LookupService:
    url: str
    body: str
    hits: int = 0


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def lookup() -> AsyncIterator[LookupService]:
    service = LookupService(url="", body="198.51.100.23\n")

    async def answer(request: web.Request) -> web.Response:
        service.hits += 1
        return web.Response(text=service.body)

    app = web.Application()
    app.router.add_get("/ip", answer)
    runner, base = await _serve(app)
    service.url = f"{base}/ip"
    try:
        yield service
    finally:
        await runner.cleanup()


@pytest.fixture
def on_ec2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow metadata requests: every test passes imds_url of a loopback stand-in."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")


def config(**master: str) -> Config:
    return Config(master=MasterSection(**master))


async def test_external_ip_wins_over_metadata_and_lookup(
    imds: FakeImds, lookup: LookupService, on_ec2: None
) -> None:
    imds.items["public-ipv4"] = "203.0.113.7"
    cfg = config(external_ip=" 192.0.2.10 ", external_ip_lookup_url=lookup.url)
    found = await discover_master_ip(cfg, imds_url=imds.url)
    assert (found.ip, found.source) == ("192.0.2.10", "[master] external_ip")
    assert imds.requests == []
    assert lookup.hits == 0


async def test_external_ip_ipv6_is_normalised() -> None:
    cfg = config(external_ip="2001:DB8:0:0::1")
    assert (await discover_master_ip(cfg)).ip == "2001:db8::1"


async def test_external_ip_that_is_not_an_address_is_one_clear_line() -> None:
    cfg = Config(path="/etc/controller.toml", master=MasterSection(external_ip="master.example"))
    with pytest.raises(MasterAddressError) as caught:
        await discover_master_ip(cfg)
    assert str(caught.value) == (
        "/etc/controller.toml: [master] external_ip: 'master.example' is not an IPv4 or IPv6 "
        "address"
    )


async def test_metadata_disabled_never_asks_and_says_what_to_set(imds: FakeImds) -> None:
    # conftest sets AWS_EC2_METADATA_DISABLED=true
    with pytest.raises(MasterAddressError) as caught:
        await discover_master_ip(config(), imds_url=imds.url)
    assert str(caught.value) == (
        "cannot tell the master's address: set [master] external_ip (instance metadata is "
        "disabled by AWS_EC2_METADATA_DISABLED, and no external_ip_lookup_url configured)"
    )
    assert "\n" not in str(caught.value)
    assert imds.requests == []


async def test_imdsv2_sends_token_and_admits_the_private_address_not_the_public_one(
    imds: FakeImds, on_ec2: None
) -> None:
    imds.items.update({"public-ipv4": "203.0.113.7", "local-ipv4": "10.0.1.5"})
    found = await discover_master_ip(config(), imds_url=imds.url)
    assert (found.ip, found.source) == ("10.0.1.5", "instance metadata local-ipv4")
    assert "203.0.113.7" in found.reason and found.warning == ""
    assert imds.requests[0] == ("PUT", "/latest/api/token")
    assert len(imds.token_ttls) == 1 and int(imds.token_ttls[0]) > 0
    gets = {path for method, path in imds.requests if method == "GET"}
    assert "/latest/meta-data/local-ipv4" in gets


async def test_imds_with_only_a_private_address(imds: FakeImds, on_ec2: None) -> None:
    imds.items["local-ipv4"] = "10.0.1.5"
    assert (await discover_master_ip(config(), imds_url=imds.url)).ip == "10.0.1.5"


async def test_imds_without_a_private_address_is_one_clear_line_not_the_public_one(
    imds: FakeImds, on_ec2: None
) -> None:
    imds.items["public-ipv4"] = "203.0.113.7"
    with pytest.raises(MasterAddressError) as caught:
        await discover_master_ip(config(), imds_url=imds.url)
    assert str(caught.value) == (
        f"instance metadata at {imds.url} has no local-ipv4 (only public-ipv4 203.0.113.7, "
        "which is never the source): the slaves are reached at their private addresses, so set "
        "[master] external_ip to the address they see"
    )


async def test_master_in_another_vpc_is_still_admitted_by_its_private_address_with_a_warning(
    imds: FakeImds, on_ec2: None
) -> None:
    imds.items.update(
        {
            "public-ipv4": "203.0.113.7",
            "local-ipv4": "10.0.1.5",
            "mac": MAC,
            f"network/interfaces/macs/{MAC}/vpc-id": "vpc-0abc",
        }
    )

    async def vpc(name: str) -> str:
        return name

    same = await discover_master_ip(config(), imds_url=imds.url, slave_vpc=lambda: vpc("vpc-0abc"))
    other = await discover_master_ip(config(), imds_url=imds.url, slave_vpc=lambda: vpc("vpc-0def"))
    assert (same.ip, same.warning) == ("10.0.1.5", "")
    assert other.ip == "10.0.1.5"
    assert "vpc-0abc" in other.warning and "vpc-0def" in other.warning
    assert "peered" in other.warning


async def test_imds_token_refused_counts_as_not_on_ec2(on_ec2: None) -> None:
    app = web.Application()  # answers 404 to the token PUT: not a metadata service
    runner, url = await _serve(app)
    try:
        with pytest.raises(MasterAddressError, match=r"\(not on EC2, and no external_ip_lookup"):
            await discover_master_ip(config(), imds_url=url)
    finally:
        await runner.cleanup()


async def test_not_on_ec2_without_lookup_url_is_one_clear_line(on_ec2: None) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MasterAddressError) as caught:
        await discover_master_ip(config(), imds_url=closed, timeout=0.5)
    assert str(caught.value) == (
        "cannot tell the master's address: set [master] external_ip "
        "(not on EC2, and no external_ip_lookup_url configured)"
    )


async def test_not_on_ec2_uses_the_configured_lookup_url(
    lookup: LookupService, on_ec2: None
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    cfg = config(external_ip_lookup_url=lookup.url)
    found = await discover_master_ip(cfg, imds_url=closed, timeout=0.5)
    assert (found.ip, found.source) == (
        "198.51.100.23",
        f"[master] external_ip_lookup_url {lookup.url}",
    )
    assert lookup.hits == 1


async def test_metadata_disabled_uses_the_configured_lookup_url(
    imds: FakeImds, lookup: LookupService
) -> None:
    cfg = config(external_ip_lookup_url=lookup.url)
    assert (await discover_master_ip(cfg, imds_url=imds.url)).ip == "198.51.100.23"
    assert imds.requests == []


async def test_lookup_answer_that_is_not_an_address_is_refused(lookup: LookupService) -> None:
    lookup.body = "<html>your ip is 1.2.3.4</html>"
    with pytest.raises(MasterAddressError, match="is not an IPv4 or IPv6 address"):
        await discover_master_ip(config(external_ip_lookup_url=lookup.url))


async def test_lookup_url_unreachable_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/ip"
    with pytest.raises(MasterAddressError, match=rf"external_ip_lookup_url {url} failed"):
        await discover_master_ip(config(external_ip_lookup_url=url))


def test_address_rule() -> None:
    def pick(public: str, vpc: str, slaves: str) -> tuple[str, bool]:
        found = choose_metadata_address(
            local_ipv4="10.0.0.9",
            public_ipv4=public,
            master_vpc_id=vpc,
            slave_vpc_id=slaves,
            imds_url="http://imds",
        )
        return found.ip, bool(found.warning)

    assert pick("203.0.113.1", "vpc-a", "vpc-a") == ("10.0.0.9", False)  # same VPC
    assert pick("203.0.113.1", "vpc-a", "vpc-b") == ("10.0.0.9", True)  # peered: still private
    assert pick("", "vpc-a", "vpc-b") == ("10.0.0.9", True)
    assert pick("203.0.113.1", "vpc-a", "") == ("10.0.0.9", False)  # slaves' VPC unknown
    assert pick("203.0.113.1", "", "vpc-b") == ("10.0.0.9", False)  # master's VPC unknown
    with pytest.raises(MasterAddressError, match="no local-ipv4"):
        choose_metadata_address(
            local_ipv4="",
            public_ipv4="203.0.113.1",
            master_vpc_id="vpc-a",
            slave_vpc_id="vpc-a",
            imds_url="http://imds",
        )


# through app.master_address, the slaves' VPC from moto's EC2


@pytest.fixture
async def cloud(moto_ec2: MotoEc2) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=moto_ec2.endpoint_url, max_attempts=1, call_timeout=5
    ) as cloud:
        yield cloud


@pytest.fixture
def master_on_ec2(imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> FakeImds:
    """A master with both addresses; botocore's own variable points at the stand-in service."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    imds.items.update({"public-ipv4": "203.0.113.7", "local-ipv4": "10.0.1.5", "mac": MAC})
    return imds


def in_vpc(imds: FakeImds, vpc_id: str) -> None:
    imds.items[f"network/interfaces/macs/{MAC}/vpc-id"] = vpc_id


def default_vpc(moto: MotoEc2) -> str:
    vpcs = moto.client().describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])
    return vpcs["Vpcs"][0]["VpcId"]


def start_lines(logs: list[dict]) -> tuple[list[dict], list[dict]]:
    """The start line naming the admitted address, and the VPC warnings."""
    named = [e for e in logs if e["event"] == "master.address"]
    differ = [e for e in logs if e["event"] == "master.vpcs_differ"]
    return named, differ


async def test_default_vpc_master_is_admitted_by_its_private_address(
    master_on_ec2: FakeImds, cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    """`[slave] subnet = ""`: the slaves launch in the default VPC, so does the master."""
    in_vpc(master_on_ec2, default_vpc(moto_ec2))
    with structlog.testing.capture_logs() as logs:
        ip = await master_address(Config(), cloud, dry_run=False)
    assert ip == "10.0.1.5"
    (line,), differ = start_lines(logs)
    assert (line["log_level"], line["address"], line["source"]) == (
        "info",
        "10.0.1.5",
        "instance metadata local-ipv4",
    )
    assert line["reason"].startswith("slaves are reached at their private addresses")
    assert differ == []


async def test_default_vpc_slaves_and_a_master_elsewhere_warn_but_admit_the_private_address(
    master_on_ec2: FakeImds, cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    """subnet "" is still looked up (the default VPC), so a master outside it is noticed."""
    in_vpc(master_on_ec2, "vpc-0elsewhere")
    with structlog.testing.capture_logs() as logs:
        ip = await master_address(Config(), cloud, dry_run=False)
    assert ip == "10.0.1.5"
    (line,), (warning,) = start_lines(logs)
    assert line["source"] == "instance metadata local-ipv4"
    assert warning["log_level"] == "warning"
    assert default_vpc(moto_ec2) in warning["problem"]
    assert "vpc-0elsewhere" in warning["problem"] and "peered" in warning["problem"]


async def test_master_in_the_slaves_subnet_vpc_is_admitted_by_its_private_address(
    master_on_ec2: FakeImds, cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    in_vpc(master_on_ec2, moto_ec2.vpc_id)
    cfg = Config(slave=SlaveSection(subnet=moto_ec2.subnet_id))
    with structlog.testing.capture_logs() as logs:
        ip = await master_address(cfg, cloud, dry_run=False)
    assert ip == "10.0.1.5"
    (line,), differ = start_lines(logs)
    assert (line["address"], line["source"]) == ("10.0.1.5", "instance metadata local-ipv4")
    assert differ == []


async def test_cluster_subnet_in_another_vpc_warns_and_admits_the_private_address(
    master_on_ec2: FakeImds, cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    """The cluster path passes its own subnet; the master sits in the default VPC."""
    in_vpc(master_on_ec2, default_vpc(moto_ec2))
    with structlog.testing.capture_logs() as logs:
        ip = await master_address(Config(), cloud, dry_run=False, subnet=moto_ec2.subnet_id)
    assert ip == "10.0.1.5"
    _, (warning,) = start_lines(logs)
    assert moto_ec2.vpc_id in warning["problem"]


async def test_external_ip_is_used_as_is_and_named_at_start(
    master_on_ec2: FakeImds, cloud: Ec2Cloud
) -> None:
    cfg = Config(master=MasterSection(external_ip="192.0.2.10"))
    with structlog.testing.capture_logs() as logs:
        ip = await master_address(cfg, cloud, dry_run=False)
    assert ip == "192.0.2.10"
    (line,), _ = start_lines(logs)
    assert (line["address"], line["source"]) == ("192.0.2.10", "[master] external_ip")
    assert master_on_ec2.requests == []


async def test_lookup_url_is_named_at_start(lookup: LookupService, cloud: Ec2Cloud) -> None:
    # conftest sets AWS_EC2_METADATA_DISABLED=true
    cfg = Config(master=MasterSection(external_ip_lookup_url=lookup.url))
    with structlog.testing.capture_logs() as logs:
        ip = await master_address(cfg, cloud, dry_run=False)
    assert ip == "198.51.100.23"
    (line,), _ = start_lines(logs)
    assert line["source"] == f"[master] external_ip_lookup_url {lookup.url}"
    assert "AWS_EC2_METADATA_DISABLED" in line["reason"]


async def test_master_without_a_private_address_cannot_start(
    master_on_ec2: FakeImds, cloud: Ec2Cloud
) -> None:
    del master_on_ec2.items["local-ipv4"]
    with pytest.raises(StartupError, match=r"has no local-ipv4 .*set \[master\] external_ip"):
        await master_address(Config(), cloud, dry_run=False)

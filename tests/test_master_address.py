"""discover_master_ip against a local stand-in for the EC2 metadata service and a lookup URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from controller.config import Config, MasterSection
from controller.master_address import (
    MasterAddressError,
    choose_metadata_address,
    discover_master_ip,
)
from tests.harness.net import free_port

TOKEN = "AQAEAFakeToken=="


@dataclass
class FakeImds:
    """IMDSv2 as EC2 serves it: a token from PUT, then GETs that must carry it."""

    url: str = ""
    items: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_ttls: list[str] = field(default_factory=list)

    async def token(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if ttl is None:
            return web.Response(status=400)
        self.token_ttls.append(ttl)
        return web.Response(text=TOKEN)

    async def item(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        if request.headers.get("X-aws-ec2-metadata-token") != TOKEN:
            return web.Response(status=401)
        value = self.items.get(request.match_info["path"])
        return web.Response(status=404) if value is None else web.Response(text=value)


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
async def imds() -> AsyncIterator[FakeImds]:
    fake = FakeImds()
    app = web.Application()
    app.router.add_put("/latest/api/token", fake.token)
    app.router.add_get("/latest/meta-data/{path:.+}", fake.item)
    runner, fake.url = await _serve(app)
    try:
        yield fake
    finally:
        await runner.cleanup()


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
    assert await discover_master_ip(cfg, imds_url=imds.url) == "192.0.2.10"
    assert imds.requests == []
    assert lookup.hits == 0


async def test_external_ip_ipv6_is_normalised() -> None:
    cfg = config(external_ip="2001:DB8:0:0::1")
    assert await discover_master_ip(cfg) == "2001:db8::1"


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


async def test_imdsv2_sends_token_and_prefers_public_address(imds: FakeImds, on_ec2: None) -> None:
    imds.items.update({"public-ipv4": "203.0.113.7", "local-ipv4": "10.0.1.5"})
    assert await discover_master_ip(config(), imds_url=imds.url) == "203.0.113.7"
    assert imds.requests[0] == ("PUT", "/latest/api/token")
    assert len(imds.token_ttls) == 1 and int(imds.token_ttls[0]) > 0
    gets = {path for method, path in imds.requests if method == "GET"}
    assert "/latest/meta-data/public-ipv4" in gets


async def test_imds_without_public_address_falls_back_to_private(
    imds: FakeImds, on_ec2: None
) -> None:
    imds.items["local-ipv4"] = "10.0.1.5"
    assert await discover_master_ip(config(), imds_url=imds.url) == "10.0.1.5"


async def test_master_in_the_slaves_vpc_is_admitted_by_its_private_address(
    imds: FakeImds, on_ec2: None
) -> None:
    imds.items.update(
        {
            "public-ipv4": "203.0.113.7",
            "local-ipv4": "10.0.1.5",
            "mac": "0e:49:61:0f:c3:11",
            "network/interfaces/macs/0e:49:61:0f:c3:11/vpc-id": "vpc-0abc",
        }
    )
    same = await discover_master_ip(config(), imds_url=imds.url, slave_vpc_id="vpc-0abc")
    other = await discover_master_ip(config(), imds_url=imds.url, slave_vpc_id="vpc-0def")
    assert (same, other) == ("10.0.1.5", "203.0.113.7")


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
    assert await discover_master_ip(cfg, imds_url=closed, timeout=0.5) == "198.51.100.23"
    assert lookup.hits == 1


async def test_metadata_disabled_uses_the_configured_lookup_url(
    imds: FakeImds, lookup: LookupService
) -> None:
    cfg = config(external_ip_lookup_url=lookup.url)
    assert await discover_master_ip(cfg, imds_url=imds.url) == "198.51.100.23"
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
    def pick(public: str, vpc: str, slaves: str) -> str:
        return choose_metadata_address(
            local_ipv4="10.0.0.9", public_ipv4=public, master_vpc_id=vpc, slave_vpc_id=slaves
        )

    assert pick("203.0.113.1", "vpc-a", "vpc-a") == "10.0.0.9"  # same VPC: private path
    assert pick("203.0.113.1", "vpc-a", "vpc-b") == "203.0.113.1"  # elsewhere: public path
    assert pick("", "vpc-a", "vpc-b") == "10.0.0.9"  # no public address: peering or VPN
    assert pick("203.0.113.1", "vpc-a", "") == "203.0.113.1"  # slaves' VPC unknown

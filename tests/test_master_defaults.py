"""[slave] region, image_id and subnet left blank are the master's own, from its instance metadata
(a stand-in IMDSv2 on loopback, tests.harness.imds); off EC2 a blank region or image_id is one
line saying to set it, and a blank subnet stays the default VPC."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.cli import main
from controller.cloud.master_defaults import (
    MasterDefaultsError,
    blanks,
    fill_blanks,
    fill_from_metadata,
    taken_text,
)
from controller.config.reader import load_config
from controller.config.schema import ClusterSection, Config, SlaveSection
from tests.harness.imds import MAC, FakeImds
from tests.harness.net import free_port

AMI = "ami-0123456789abcdef0"
SUBNET = "subnet-0abc1234"
SET = SlaveSection(region="eu-west-1", image_id="ami-12345678", subnet="subnet-00000001")
BLANK = SlaveSection(region="", image_id="", subnet="")


@pytest.fixture
def master(imds: FakeImds, monkeypatch: pytest.MonkeyPatch) -> FakeImds:
    """A master in a VPC subnet, reached through botocore's own endpoint variable."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url)
    imds.items.update(
        {
            "placement/region": "eu-central-1",
            "ami-id": AMI,
            "mac": MAC,
            f"network/interfaces/macs/{MAC}/subnet-id": SUBNET,
        }
    )
    return imds


def gets(imds: FakeImds) -> list[str]:
    return [
        path.removeprefix("/latest/meta-data/") for method, path in imds.requests if method == "GET"
    ]


async def test_blank_region_image_and_subnet_are_the_masters(master: FakeImds) -> None:
    config, taken = await fill_from_metadata(Config(slave=BLANK))
    assert (config.slave.region, config.slave.image_id, config.slave.subnet) == (
        "eu-central-1",
        AMI,
        SUBNET,
    )
    assert taken == {"slave.region": "eu-central-1", "slave.image_id": AMI, "slave.subnet": SUBNET}
    assert taken_text(taken) == (
        f"[slave] region = eu-central-1, [slave] image_id = {AMI}, [slave] subnet = {SUBNET}"
    )
    assert master.requests[0] == ("PUT", "/latest/api/token") and master.token_ttls
    assert gets(master) == [
        "placement/region",
        "ami-id",
        "mac",
        f"network/interfaces/macs/{MAC}/subnet-id",
    ]


async def test_set_keys_are_kept_and_the_metadata_is_not_asked(master: FakeImds) -> None:
    config, taken = await fill_from_metadata(Config(slave=SET))
    assert (config.slave, taken) == (SET, {})
    assert master.requests == []


async def test_a_master_outside_any_vpc_keeps_the_blank_subnet(master: FakeImds) -> None:
    del master.items[f"network/interfaces/macs/{MAC}/subnet-id"]
    config, taken = await fill_from_metadata(Config(slave=BLANK))
    assert (config.slave.region, config.slave.image_id, config.slave.subnet) == (
        "eu-central-1",
        AMI,
        "",
    )
    assert "slave.subnet" not in taken


async def test_a_cluster_takes_the_masters_image_and_subnet_not_the_render_farms(
    master: FakeImds,
) -> None:
    cluster = ClusterSection(name="small")
    config = Config(slave=replace(SET, image_id=""), clusters=(cluster,))
    filled, taken = await fill_from_metadata(config, cluster="small")
    assert (filled.clusters[0].image_id, filled.clusters[0].subnet) == (AMI, SUBNET)
    assert filled.slave == config.slave  # the render farm's blank image is not this run's
    assert set(taken) == {"cluster.small.image_id", "cluster.small.subnet"}


async def test_a_command_that_launches_nothing_asks_only_the_region(master: FakeImds) -> None:
    config, taken = await fill_from_metadata(Config(slave=BLANK), launches=False)
    assert taken == {"slave.region": "eu-central-1"}
    assert (config.slave.region, config.slave.image_id, config.slave.subnet) == (
        "eu-central-1",
        "",
        "",
    )
    assert gets(master) == ["placement/region"]


async def test_metadata_disabled_is_one_line_and_never_asks(imds: FakeImds) -> None:
    # conftest sets AWS_EC2_METADATA_DISABLED=true
    with pytest.raises(MasterDefaultsError) as caught:
        await fill_from_metadata(Config(slave=replace(SET, region="")), imds_url=imds.url)
    assert str(caught.value) == (
        "[slave] region is blank and this machine's instance metadata is not reachable "
        "(AWS_EC2_METADATA_DISABLED=true): set region (the master is not on EC2)"
    )
    assert imds.requests == []


async def test_not_on_ec2_names_every_blank_key_in_one_line(monkeypatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MasterDefaultsError) as caught:
        await fill_from_metadata(Config(slave=replace(SET, image_id="")), imds_url=closed)
    assert str(caught.value) == (
        "[slave] image_id is blank and this machine's instance metadata is not reachable: "
        "set image_id (the master is not on EC2)"
    )
    with pytest.raises(MasterDefaultsError) as caught:
        await fill_from_metadata(Config(slave=BLANK), imds_url=closed)
    assert str(caught.value) == (
        "[slave] region and [slave] image_id are blank and this machine's instance metadata is "
        "not reachable: set them (the master is not on EC2)"
    )


async def test_off_ec2_a_blank_subnet_stays_the_default_vpc(monkeypatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    config = Config(slave=replace(SET, subnet=""))
    closed = f"http://127.0.0.1:{free_port()}"
    assert await fill_from_metadata(config, imds_url=closed) == (config, {})
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert await fill_from_metadata(config, imds_url=closed) == (config, {})


async def test_metadata_without_the_item_names_the_key(master: FakeImds) -> None:
    del master.items["ami-id"]
    with pytest.raises(MasterDefaultsError) as caught:
        await fill_from_metadata(Config(slave=replace(SET, image_id="")))
    assert str(caught.value) == (
        f"[slave] image_id is blank and the instance metadata at {master.url} has no ami-id: "
        "set image_id"
    )


def test_a_reload_refills_only_the_keys_still_blank() -> None:
    """SIGHUP reads the file again: what start took from the metadata fills the same blanks."""
    taken = {"slave.region": "eu-central-1", "cluster.small.image_id": AMI}
    new = Config(
        slave=replace(SET, region=""),
        clusters=(ClusterSection(name="small"), ClusterSection(name="big", image_id="")),
    )
    filled = fill_blanks(new, taken)
    assert filled.slave.region == "eu-central-1"
    assert [c.image_id for c in filled.clusters] == [AMI, ""]
    explicit = Config(slave=replace(SET, region="us-west-2"))
    assert fill_blanks(explicit, taken) == explicit


def test_blanks_are_what_the_command_needs() -> None:
    keys = [b.key for b in blanks(Config(slave=BLANK))]
    assert keys == ["slave.region", "slave.image_id", "slave.subnet"]
    assert [b.required for b in blanks(Config(slave=BLANK))] == [True, True, False]
    assert [b.key for b in blanks(Config(slave=BLANK), launches=False)] == ["slave.region"]
    cluster = Config(slave=SET, clusters=(ClusterSection(name="c", image_id="ami-12345678"),))
    assert [b.label for b in blanks(cluster, cluster="c")] == ["[cluster.c] subnet"]


def test_a_blank_region_loads(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[slave]\nregion = ""\nimage_id = ""\n')
    assert load_config(path).slave.region == ""
    path.write_text('[slave]\nregion = "Not A Region"\n')
    with pytest.raises(Exception, match="expected a region name"):
        load_config(path)


def test_iam_policy_names_the_masters_region(tmp_path, master: FakeImds, capsys) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[slave]\nregion = ""\n')
    assert main(["iam-policy", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert '"aws:RequestedRegion": "eu-central-1"' in captured.out
    assert captured.err.splitlines() == [
        "from the master's instance metadata: [slave] region = eu-central-1"
    ]
    assert gets(master) == ["placement/region"]  # launches nothing: image and subnet stay "*"


@pytest.mark.parametrize("command", ["iam-policy", "teardown"])
def test_off_ec2_a_blank_region_is_one_line_exit_2(tmp_path, capsys, command) -> None:
    # conftest sets AWS_EC2_METADATA_DISABLED=true
    path = tmp_path / "c.toml"
    path.write_text('[slave]\nregion = ""\n')
    assert main([command, "-c", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{path}: [slave] region is blank and this machine's instance metadata is not reachable "
        "(AWS_EC2_METADATA_DISABLED=true): set region (the master is not on EC2)"
    ]

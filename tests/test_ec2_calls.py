"""What SpotPool asks of EC2 each cycle, counted at the fault proxy in front of moto.

A steady cycle reads the fleet with one DescribeInstances; spot requests are read when the pool
adopts the fleet and while some are open (spot launches by RunInstances leave none), not at
every cycle.
"""

from __future__ import annotations

import asyncio

from actors.spot_pool import SpotPool
from controller.cloud.ec2cloud import Ec2Cloud
from controller.config.schema import (
    Config,
    ControllerSection,
    LoadRow,
    LoadTableSection,
    MasterSection,
    ScalingSection,
    SlaveSection,
)
from controller.messages import LoadSample, SecurityGroupReady
from controller.policy.factory import make_policy
from controller.runtime.bus import Bus
from tests.actor_runner import running
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2

POLL = 0.3


def farm(moto: MotoEc2, spot_bid: float | None = None) -> Config:
    return Config(
        controller=ControllerSection(fleet="calls", on_exit="leave"),
        master=MasterSection(poll_interval=POLL),
        load_table=LoadTableSection(rows=(LoadRow(rps=1.0, min_instances=3, max_instances=3),)),
        scaling=ScalingSection(policy="table", request_timeout=600.0),
        slave=SlaveSection(
            instance_types=("m5.large",),
            image_id="ami-12345678",
            subnet=moto.subnet_id,
            spot_bid=spot_bid,
        ),
    )


async def run_pool(moto_ec2: MotoEc2, fault_proxy: FaultProxy, config: Config) -> None:
    """SpotPool on moto through the proxy for ten polls, asked for three slaves."""
    group = moto_ec2.client().create_security_group(
        GroupName="calls", Description="the slaves", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    bus = Bus()
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=fault_proxy.endpoint_url, max_attempts=1
    ) as cloud:
        pool = SpotPool(config=config, bus=bus, cloud=cloud, policy=make_policy("table", config))
        bus.publish(SecurityGroupReady(at=0.0, group_id=group, created=False))
        bus.publish(LoadSample(at=0.0, rps=1.0, window_rps=1.0))
        async with running(pool):
            await asyncio.sleep(10 * POLL)


async def test_a_steady_cycle_reads_the_instances_only(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    await run_pool(moto_ec2, fault_proxy, farm(moto_ec2))
    cycles = fault_proxy.count("DescribeInstances")
    assert cycles >= 5
    assert fault_proxy.count("RunInstances") == 3  # moto gives one a call: the rest at once
    # adoption read the requests; no cycle after it did
    assert fault_proxy.count("DescribeSpotInstanceRequests") == 1
    # prices (for cost_per_hour) are cached for minutes: one read in ten polls
    assert fault_proxy.count("DescribeSpotPriceHistory") == 1


async def test_launches_under_a_bid_use_the_cached_spot_price(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    await run_pool(moto_ec2, fault_proxy, farm(moto_ec2, spot_bid=0.5))
    assert fault_proxy.count("RunInstances") == 3  # moto's price is far under the bid
    # one price for the type (any zone) before the first launch, which serves the zone the
    # slaves landed in too; none in the launch path, none again within PRICE_REFRESH_SECONDS
    assert fault_proxy.count("DescribeSpotPriceHistory") == 1

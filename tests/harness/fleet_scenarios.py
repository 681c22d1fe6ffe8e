"""Fleet scenarios beside tests/harness/fault_scenarios.py (same Rig, Run and Figures):

- `capacity_fallback`: EC2 has no capacity for the first instance type (RunInstances of it
  answers InsufficientInstanceCapacity, HTTP 500, as EC2 does): the fleet launches on the second
  type; after capacity_cooldown the first is asked again (still short: the second again); once
  capacity is back and the cooldown over, a replacement goes on the first type again;
- `group_ingress`: the security group the controller made for the slaves, read back from EC2:
  exactly the master's /32 on the slave ports, and 22 only with `[slave] ssh_key`.
"""

from __future__ import annotations

import time

from tests.harness.e2e import FLEET, listed
from tests.harness.scenario_run import Figures, Rig, Run

FIRST, SECOND = "m5.large", "c5.large"
SSH_KEY = "e2e-key"
_NO_CAPACITY = (
    f"We currently do not have sufficient {FIRST} capacity in the Availability Zone you "
    "requested. Our system will be working on provisioning additional capacity."
)


def capacity_fallback(rig: Rig, cooldown: float = 6.0) -> Figures:
    """Three slaves while FIRST has no capacity, then two replacements: one while it is still
    short (after its cooldown: asked again, refused, SECOND), one once it is back (FIRST)."""
    run = Run(rig, "capacity", "[[2.0, 3, 3]]", scaling_extra=f"capacity_cooldown = {cooldown}")
    config = run.farm.config
    config.write_text(
        config.read_text().replace(
            f'instance_type = "{FIRST}"', f'instance_types = ["{FIRST}", "{SECOND}"]'
        )
    )
    try:
        rig.proxy.fail(
            "RunInstances",
            "InsufficientInstanceCapacity",
            _NO_CAPACITY,
            500,
            when={"InstanceType": FIRST},
        )
        run.start()
        run.figures.recover["fell back"] = run.wait_converged(3)
        run.expect(_types(run) == [SECOND] * 3, f"all on {SECOND}: {_types(run)}")
        run.expect(_asked(rig, FIRST) == 1, f"{FIRST} asked once, then cooling down")
        time.sleep(cooldown + 1)
        run.figures.recover["replaced, still short"] = _replace_one(run)
        run.expect(_types(run) == [SECOND] * 3, f"still all on {SECOND}: {_types(run)}")
        run.expect(_asked(rig, FIRST) == 2, f"{FIRST} asked again after its cooldown")
        rig.proxy.heal()  # the capacity is back
        time.sleep(cooldown + 1)
        run.figures.recover[f"back on {FIRST}"] = _replace_one(run)
        run.expect(sorted(_types(run)) == [SECOND, SECOND, FIRST], f"types {_types(run)}")
        run.figures.notes[f"{FIRST} asked"] = _asked(rig, FIRST)
        run.figures.notes[f"{FIRST} refused"] = run.log_text().count("InsufficientInstanceCapacity")
        return run.finish()
    finally:
        run.close()


def _replace_one(run: Run) -> float:
    """Kill one slave; seconds until its replacement is listed in its place."""
    before = {i["InstanceId"] for i in run.alive()}
    victim = sorted(listed(run.farm))[0]
    run.rig.render_farm.kill(victim.split("//", 1)[1].rsplit(":", 1)[0])
    started = time.monotonic()

    def replaced() -> bool:
        ids = {i["InstanceId"] for i in run.alive()}
        return len(ids - before) == 1 and len(ids) == 3 and run.converged(3)

    run.wait("the dead slave replaced", replaced, 60)
    return round(time.monotonic() - started, 2)


def _types(run: Run) -> list[str]:
    return sorted(i["InstanceType"] for i in run.alive())


def _asked(rig: Rig, instance_type: str) -> int:
    return sum(
        1 for p in rig.proxy.params("RunInstances") if p.get("InstanceType") == instance_type
    )


def group_ingress(rig: Rig, *, ssh_key: bool) -> Figures:
    """Two slaves; the fleet's group as EC2 has it, in notes["ingress"] as (protocol, from port,
    to port, source) rows, and whether every slave is in it (notes["slaves in it"])."""
    if ssh_key:
        rig.moto_ec2.client().create_key_pair(KeyName=SSH_KEY)
    extra = f'ssh_key = "{SSH_KEY}"' if ssh_key else ""
    run = Run(rig, "ssh" if ssh_key else "no_ssh", "[[2.0, 2, 2]]", slave_extra=extra)
    try:
        run.start()
        run.wait_converged(2)
        groups = run.ec2.describe_security_groups(
            Filters=[{"Name": "tag:controller:fleet", "Values": [FLEET]}]
        )["SecurityGroups"]
        run.expect(len(groups) == 1, f"one group of the fleet, not {len(groups)}")
        group = groups[0]
        run.figures.notes["ingress"] = sorted(
            row for permission in group["IpPermissions"] for row in _rows(permission)
        )
        run.figures.notes["slaves in it"] = all(
            [g["GroupId"] for g in i["SecurityGroups"]] == [group["GroupId"]] for i in run.alive()
        )
        run.figures.notes["master"] = f"{run.farm.port} from 127.0.0.1/32"
        return run.finish()
    finally:
        run.close()
        if ssh_key:
            rig.moto_ec2.client().delete_key_pair(KeyName=SSH_KEY)


def _rows(permission: dict) -> list[tuple[str, int, int, str]]:
    """One row per source a permission admits: IPv4 and IPv6 ranges, groups, prefix lists."""
    sources = (
        [r["CidrIp"] for r in permission.get("IpRanges", [])]
        + [r["CidrIpv6"] for r in permission.get("Ipv6Ranges", [])]
        + [g["GroupId"] for g in permission.get("UserIdGroupPairs", [])]
        + [p["PrefixListId"] for p in permission.get("PrefixListIds", [])]
    )
    ports = (permission["IpProtocol"], permission.get("FromPort", -1), permission.get("ToPort", -1))
    return [(*ports, source) for source in sources]

"""The config's shape: one frozen dataclass per TOML section, every value typed and defaulted.

Key names follow GBrowse's aws_balancer.conf (../shared/SPEC.md), so a GBrowse user recognises them.
Units are in the comment of each field: seconds unless named otherwise, dollars per hour for
prices. Other modules read these exact attribute names; controller.config.reader builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadRow:
    rps: float  # requests/sec at or above which this row applies
    min_instances: int
    max_instances: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSection:
    fleet: str = "gbrowse"  # every resource made is tagged controller:fleet=<fleet>
    on_exit: str = "teardown"  # "teardown" | "leave"


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterSection:
    server_status_url: str = "http://127.0.0.1/server-status?auto"
    poll_interval: float = 30.0  # seconds
    # mod_status is read this often (at most every poll), and every reading may call for a
    # scale-out at once; EC2 is still described once per poll
    sample_interval: float = 1.0
    external_ip: str = ""  # "" = discover via instance metadata (IMDSv2) when on EC2
    external_ip_lookup_url: str = ""  # opt-in public lookup; never used unless set
    renderfarm_conf: str = "/etc/gbrowse2/renderfarm.conf"
    reload_command: tuple[str, ...] = ("apache2ctl", "graceful")
    window_seconds: float = 120.0  # smoothing window of the request rate
    status_timeout: float = 5.0  # seconds for one server-status fetch

    @property
    def reading_interval(self) -> float:
        """Seconds between server-status readings: `sample_interval`, never longer than a poll."""
        return min(self.sample_interval, self.poll_interval)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadTableSection:
    rows: tuple[LoadRow, ...] = (
        LoadRow(rps=0.1, min_instances=0, max_instances=1),
        LoadRow(rps=0.5, min_instances=0, max_instances=2),
        LoadRow(rps=1.0, min_instances=1, max_instances=3),
        LoadRow(rps=2.0, min_instances=2, max_instances=4),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingSection:
    policy: str = "ours"  # ours | table (the seed band + dwell) | gbrowse | starcluster
    scale_in_after: float = 300.0  # seconds the band must ask for fewer before one is removed
    drain_seconds: float = 30.0  # between leaving renderfarm.conf and termination
    request_timeout: float = 300.0  # an unfilled launch is abandoned, next type/zone tried
    interruption_queue: str = ""  # SQS queue URL fed by EventBridge spot interruption warnings
    capacity_cooldown: float = 600.0  # a (type, zone) that failed for capacity is skipped this long
    max_cost_per_hour: float | None = None  # budget cap: launches never push the fleet above it
    probe_timeout: float = 5.0  # seconds for one slave readiness/liveness probe
    # The policy's model of a slave, which `simulate` and the simulated cloud use as well (older
    # configs set both in [simulate]; the reader still takes them from there, with a note).
    slave_capacity_rps: float = 2.0  # requests/sec one slave serves; demand = ceil(load/capacity)
    boot_seconds: float = 90.0  # launch until the readiness probe passes


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaveSection:
    instance_types: tuple[str, ...] = ("m5.large",)  # `instance_type` folds into this
    spot_bid: float | None = None  # max $/h; None = pay the spot price
    ports: tuple[int, ...] = (8101,)
    region: str = "us-east-1"
    image_id: str = ""
    data_snapshots: tuple[str, ...] = ()
    availability_zone: str = ""
    subnet: str = ""
    security_group: str = ""  # "" = create one, owned and deleted by the controller
    ssh_key: str = ""  # EC2 key pair name; opens port 22 to the master only
    user_data: str = ""  # extra shell run on the slave before the render slave starts


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsSection:
    endpoint_url: str = ""  # "" = AWS; EC2 only (a VPC endpoint for EC2 serves no SQS)
    sqs_endpoint_url: str = ""  # "" = the interruption queue's region's SQS endpoint
    retry_mode: str = "adaptive"  # botocore retry mode: standard | adaptive | legacy
    max_attempts: int = 10  # botocore total_max_attempts
    call_timeout: float = 30.0  # seconds for one EC2 call (connect + read)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSection:
    listen: str = "127.0.0.1:8990"  # "" disables the endpoint
    token: str = ""  # bearer token required when set (never logged)
    token_file: str = ""  # or read it from this file

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSection:
    """`controller sync-data`: the staging instance that fills the slaves' data snapshot."""

    ssh_user: str = "admin"  # login user of the staging instance (the slave image's user)
    ssh_key_file: str = ""  # its private key; "" = a temporary EC2 key pair, deleted after
    ssh_port: int = 22
    staging_instance_type: str = "t3.small"


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulateSection:
    """The simulated cloud; its slaves serve and boot as [scaling] says one slave does."""

    boot_spread: float = 0.2  # boot time varies uniformly by +-20 %
    spot_price: float = 0.035  # $/h per slave
    unfilled_rate: float = 0.0  # fraction of launches that never fill
    capacity_error_rate: float = 0.0  # fraction of launches refused for capacity
    interruption_rate_per_hour: float = 0.0  # per instance


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeSection:
    name: str
    snapshot_id: str = ""  # every node gets its own copy
    volume_id: str = ""  # or one volume shared from the head
    mount_path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginSection:
    name: str
    kind: str  # profile | motd | stop-services | sge | slurm | commands
    options: tuple[tuple[str, object], ...] = ()  # the remaining keys, in file order


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSection:
    name: str
    extends: str = ""
    load_source: str = "sge"  # "sge" (Grid Engine) or "slurm"
    node_instance_types: tuple[str, ...] = ("m5.xlarge",)
    image_id: str = ""
    min_nodes: int = 0
    max_nodes: int = 8
    spot_bid: float | None = None
    subnet: str = ""
    availability_zone: str = ""
    cluster_user: str = "sgeadmin"
    ssh_key_file: str = ""
    ssh_port: int = 22
    idle_seconds: float = 300.0
    node_slots: int = 1  # Grid Engine slots one node offers: pending slots / node_slots = nodes
    volumes: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: str = ""
    controller: ControllerSection = field(default_factory=ControllerSection)
    master: MasterSection = field(default_factory=MasterSection)
    load_table: LoadTableSection = field(default_factory=LoadTableSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    slave: SlaveSection = field(default_factory=SlaveSection)
    aws: AwsSection = field(default_factory=AwsSection)
    stats: StatsSection = field(default_factory=StatsSection)
    sync: SyncSection = field(default_factory=SyncSection)
    simulate: SimulateSection = field(default_factory=SimulateSection)
    clusters: tuple[ClusterSection, ...] = ()
    volumes: tuple[VolumeSection, ...] = ()
    plugins: tuple[PluginSection, ...] = ()
    # Lines (`FILE: key: note`) about a config that works but should change, such as a key in
    # its old place; check-config and simulate print them, run logs them. Not part of its value.
    notes: tuple[str, ...] = field(default=(), compare=False)

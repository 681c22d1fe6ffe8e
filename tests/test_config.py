"""Config loading through `controller check-config`: every bad input is one line naming the file,
the key path and the reason, with exit 2; a good config prints back as TOML that parses equal."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from controller.cli import main
from controller.config.reader import ConfigError, load_config, parse_config
from controller.config.render import render_toml
from controller.config.schema import ClusterSection, Config, LoadRow, ScalingSection

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
# check-config notes a renderfarm.conf directory missing on this machine ("." exists) and a
# blank image_id (taken from the instance metadata at run): these configs get neither note.
FARM_HERE = '[master]\nrenderfarm_conf = "renderfarm.conf"\n[slave]\nimage_id = "ami-12345678"\n'


def check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str, list[str]]:
    rc = main(["check-config", "-c", str(path)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.splitlines()


@pytest.fixture
def write(tmp_path: Path):
    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# Each case: a bad config, the key path its single error line names, and words of the reason.
BAD_CONFIGS = {
    "unknown key with a suggestion": (
        "[master]\npol_interval = 30\n",
        "master.pol_interval",
        "unknown key (did you mean 'poll_interval'?)",
    ),
    "unknown section with a suggestion": (
        "[slaves]\nports = [8101]\n",
        "slaves",
        "unknown section (did you mean 'slave'?)",
    ),
    "key above every section": (
        'fleet = "web"\n',
        "fleet",
        "unknown key (it belongs in [controller])",
    ),
    "wrong type": (
        '[master]\npoll_interval = "30"\n',
        "master.poll_interval",
        "expected a number, got a string",
    ),
    "a boolean is not an integer": (
        "[aws]\nmax_attempts = true\n",
        "aws.max_attempts",
        "expected an integer, got a boolean",
    ),
    "a float is not a count": (
        "[load_table]\nrows = [[0.1, 0.5, 1]]\n",
        "load_table.rows[0]",
        "expected [number, integer, integer], got [a float, a float, an integer]",
    ),
    "table not increasing": (
        "[load_table]\nrows = [[0.1, 0, 1], [2.0, 2, 4], [1.0, 1, 3]]\n",
        "load_table.rows[2]",
        "thresholds must increase (1.0 after 2.0)",
    ),
    "table repeats a threshold": (
        "[load_table]\nrows = [[0.5, 0, 1], [0.5, 0, 2]]\n",
        "load_table.rows[1]",
        "thresholds must increase (0.5 after 0.5)",
    ),
    "min above max": (
        "[load_table]\nrows = [[0.1, 2, 1]]\n",
        "load_table.rows[0]",
        "min instances (2) is above max instances (1)",
    ),
    "negative min": (
        "[load_table]\nrows = [[0.1, -1, 1]]\n",
        "load_table.rows[0]",
        "min instances must be >= 0 (got -1)",
    ),
    "row of two columns": (
        "[load_table]\nrows = [[0.1, 1]]\n",
        "load_table.rows[0]",
        "expected [requests/sec, min instances, max instances]",
    ),
    "empty table": (
        "[load_table]\nrows = []\n",
        "load_table.rows",
        "must have at least one [rps, min, max] row",
    ),
    "port out of range": (
        "[slave]\nports = [8101, 70000]\n",
        "slave.ports[1]",
        "port must be 1..65535 (got 70000)",
    ),
    "port zero": ("[slave]\nports = [0]\n", "slave.ports[0]", "port must be 1..65535 (got 0)"),
    "no ports": ("[slave]\nports = []\n", "slave.ports", "must list at least one port"),
    "poll_interval zero": (
        "[master]\npoll_interval = 0\n",
        "master.poll_interval",
        "must be > 0 (got 0)",
    ),
    "poll_interval negative": (
        "[master]\npoll_interval = -0.5\n",
        "master.poll_interval",
        "must be > 0 (got -0.5)",
    ),
    "negative drain": (
        "[scaling]\ndrain_seconds = -1\n",
        "scaling.drain_seconds",
        "must be >= 0 (got -1)",
    ),
    "infinite timeout": (
        "[scaling]\nrequest_timeout = inf\n",
        "scaling.request_timeout",
        "must be a finite number (got inf)",
    ),
    "both instance_type and instance_types": (
        '[slave]\ninstance_type = "m5.large"\ninstance_types = ["m5.large", "m5a.large"]\n',
        "slave.instance_type",
        "set instance_type or instance_types, not both",
    ),
    "empty instance_types": (
        "[slave]\ninstance_types = []\n",
        "slave.instance_types",
        "must not be empty",
    ),
    "malformed instance type": (
        '[slave]\ninstance_types = ["m5.large", "large"]\n',
        "slave.instance_types[1]",
        "expected an EC2 instance type like 'm5.large' (got 'large')",
    ),
    "spot_bid not positive": ("[slave]\nspot_bid = 0\n", "slave.spot_bid", "must be > 0 (got 0)"),
    "on_exit unknown": (
        '[controller]\non_exit = "stay"\n',
        "controller.on_exit",
        "must be one of 'teardown', 'leave' (got 'stay')",
    ),
    "policy unknown": (
        '[scaling]\npolicy = "magic"\n',
        "scaling.policy",
        "must be one of 'ours', 'table', 'gbrowse', 'starcluster' (got 'magic')",
    ),
    "retry_mode unknown": (
        '[aws]\nretry_mode = "eager"\n',
        "aws.retry_mode",
        "must be one of 'standard', 'adaptive', 'legacy' (got 'eager')",
    ),
    "listen without port": (
        '[stats]\nlisten = "127.0.0.1"\n',
        "stats.listen",
        'expected "host:port"',
    ),
    "fleet not tag-safe": (
        '[controller]\nfleet = "my fleet!"\n',
        "controller.fleet",
        "must be 1-63 letters, digits",
    ),
    "empty fleet": ('[controller]\nfleet = ""\n', "controller.fleet", "must be 1-63 letters"),
    "reload_command with an open quote": (
        '[master]\nreload_command = "apache2ctl \'graceful"\n',
        "master.reload_command",
        "cannot split into words",
    ),
    "sqs_endpoint_url misspelt": (
        '[aws]\nsqs_endpoint = "https://sqs.eu-west-1.amazonaws.com"\n',
        "aws.sqs_endpoint",
        "unknown key (did you mean 'sqs_endpoint_url'?)",
    ),
    "sqs_endpoint_url without a scheme": (
        '[aws]\nsqs_endpoint_url = "sqs.eu-west-1.amazonaws.com"\n',
        "aws.sqs_endpoint_url",
        "expected an http:// or https:// URL",
    ),
    "server_status_url not http": (
        '[master]\nserver_status_url = "localhost/server-status"\n',
        "master.server_status_url",
        "expected an http:// or https:// URL",
    ),
    "external_ip not an address": (
        '[master]\nexternal_ip = "my-host"\n',
        "master.external_ip",
        "expected an IP address",
    ),
    "image_id malformed": (
        '[slave]\nimage_id = "ami-..."\n',
        "slave.image_id",
        "expected an id like 'ami-0123abcd'",
    ),
    "section is not a table": ("master = 3\n", "master", "expected a table, got an integer"),
    "credentials in a section": (
        '[aws]\naws_secret_access_key = "wJalrXUtnFEMI/K7MDENG"\n',
        "aws.aws_secret_access_key",
        "credentials are never read from the config",
    ),
    "credentials at the top": (
        'access_key = "AKIAIOSFODNN7EXAMPLE"\n',
        "access_key",
        "EC2_ACCESS_KEY/EC2_SECRET_KEY",
    ),
    "credentials in a plugin": (
        '[plugin.x]\nkind = "commands"\nsecret_key = "hush"\n',
        "plugin.x.secret_key",
        "credentials are never read from the config",
    ),
    "cluster cycle": (
        '[cluster.a]\nextends = "b"\n[cluster.b]\nextends = "a"\n',
        "cluster.b.extends",
        "extends cycle: a -> b -> a",
    ),
    "cluster extends itself": (
        '[cluster.a]\nextends = "a"\n',
        "cluster.a.extends",
        "extends cycle: a -> a",
    ),
    "cluster extends a missing cluster": (
        '[cluster.small]\n[cluster.big]\nextends = "smal"\n',
        "cluster.big.extends",
        "no [cluster.smal] section (did you mean 'small'?)",
    ),
    "missing volume reference": (
        '[volume.data]\nvolume_id = "vol-1"\nmount_path = "/data"\n'
        '[cluster.c]\nvolumes = ["dta"]\n',
        "cluster.c.volumes[0]",
        "no [volume.dta] section (did you mean 'data'?)",
    ),
    "missing plugin reference": (
        '[cluster.c]\nplugins = ["sge"]\n',
        "cluster.c.plugins[0]",
        "no [plugin.sge] section",
    ),
    "cluster_size and max_nodes": (
        "[cluster.c]\ncluster_size = 4\nmax_nodes = 8\n",
        "cluster.c.cluster_size",
        "set cluster_size or min_nodes/max_nodes, not both",
    ),
    "cluster min above max": (
        "[cluster.c]\nmin_nodes = 5\nmax_nodes = 2\n",
        "cluster.c",
        "min_nodes (5) is above max_nodes (2)",
    ),
    "cluster ssh_port": ("[cluster.c]\nssh_port = 0\n", "cluster.c.ssh_port", "must be >= 1"),
    "slurm cluster with an sge plugin": (
        '[cluster.c]\nload_source = "slurm"\nplugins = ["g"]\n[plugin.g]\nkind = "sge"\n',
        "cluster.c.plugins",
        '[plugin.g] is kind "sge", but the cluster\'s load_source is "slurm"',
    ),
    "cluster on an unknown queue": (
        '[cluster.c]\nload_source = "pbs"\n',
        "cluster.c.load_source",
        "must be one of 'sge', 'slurm' (got 'pbs')",
    ),
    "volume with both ids": (
        '[volume.v]\nsnapshot_id = "snap-1"\nvolume_id = "vol-1"\nmount_path = "/v"\n',
        "volume.v",
        "set snapshot_id or volume_id, not both",
    ),
    "volume mount path relative": (
        '[volume.v]\nsnapshot_id = "snap-1"\nmount_path = "data"\n',
        "volume.v.mount_path",
        "must be an absolute path (got 'data')",
    ),
    "volume without mount path": (
        '[volume.v]\nsnapshot_id = "snap-1"\n',
        "volume.v.mount_path",
        "required",
    ),
    "plugin kind unknown": (
        '[plugin.p]\nkind = "puppet"\n',
        "plugin.p.kind",
        "must be one of 'profile', 'motd', 'stop-services', 'sge', 'commands'",
    ),
    "plugin without kind": ('[plugin.p]\npath = "/x"\n', "plugin.p.kind", "required"),
    "plugin option of a table": (
        '[plugin.p]\nkind = "motd"\nextra = {a = 1}\n',
        "plugin.p.extra",
        "expected a string, number, boolean or array, got a table",
    ),
}


@pytest.mark.parametrize(("text", "keypath", "reason"), BAD_CONFIGS.values(), ids=list(BAD_CONFIGS))
def test_bad_config_is_one_line_naming_file_key_and_reason(capsys, write, text, keypath, reason):
    path = write(text)
    rc, out, err = check(capsys, path)
    assert rc == 2
    assert out == ""
    assert len(err) == 1, err
    assert err[0].startswith(f"{path}: {keypath}: "), err[0]
    assert reason in err[0]


def test_credential_values_are_never_echoed(capsys, write):
    path = write('[aws]\nsecret_key = "wJalrXUtnFEMI/K7MDENG"\n[stats]\ntoken = 5\n')
    rc, _, err = check(capsys, path)
    assert rc == 2
    assert not any("wJalrXUtnFEMI" in line for line in err)


def test_toml_syntax_error_names_file_and_position(capsys, write):
    path = write("[master]\npoll_interval = = 3\n")
    rc, out, err = check(capsys, path)
    assert (rc, out) == (2, "")
    assert len(err) == 1
    assert err[0].startswith(f"{path}: invalid TOML: ")
    assert "(at line 2, column" in err[0]


def test_missing_file(capsys, tmp_path):
    path = tmp_path / "nowhere.toml"
    rc, out, err = check(capsys, path)
    assert (rc, out) == (2, "")
    assert err == [f"{path}: cannot read the config: No such file or directory"]


def test_not_utf8(capsys, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[slave]\nssh_key = "caf\xe9"\n')
    rc, _, err = check(capsys, path)
    assert rc == 2
    assert err == [f"{path}: not UTF-8 text (line 2); TOML files must be UTF-8"]


def test_several_errors_are_all_reported(capsys, write):
    path = write(
        "[master]\npoll_interval = 0\npol_interval = 3\n"
        "[load_table]\nrows = [[1.0, 0, 1], [0.5, 3, 2]]\n"
        '[slave]\nports = [0]\naccess_key = "x"\n'
        '[aws]\nretry_mode = "fast"\n'
        '[cluster.a]\nextends = "a"\n'
    )
    rc, _, err = check(capsys, path)
    assert rc == 2
    keypaths = [line.removeprefix(f"{path}: ").split(": ", 1)[0] for line in err]
    assert sorted(keypaths) == sorted(
        [
            "master.poll_interval",
            "master.pol_interval",
            "load_table.rows[1]",  # out of order
            "load_table.rows[1]",  # and min above max
            "slave.ports[0]",
            "slave.access_key",
            "aws.retry_mode",
            "cluster.a.extends",
        ]
    )


def test_config_error_carries_key_paths_and_reasons():
    with pytest.raises(ConfigError) as caught:
        parse_config({"slave": {"ports": [0]}}, "x.toml")
    assert caught.value.errors == ("x.toml: slave.ports[0]: port must be 1..65535 (got 0)",)
    assert caught.value.problems == (("slave.ports[0]", "port must be 1..65535 (got 0)"),)


def test_repo_config_validates_and_round_trips(capsys):
    rc, out, err = check(capsys, REPO_CONFIG)
    # valid; the notes: the example's cluster key is not on this machine, its AMIs are examples
    expected = ("ssh_key_file", "looks like an example's placeholder")
    assert rc == 0 and [line for line in err if not any(e in line for e in expected)] == []
    config = load_config(REPO_CONFIG)
    assert parse_config(tomllib.loads(out), str(REPO_CONFIG)) == config
    # What the documented example promises, as the other commands will see it.
    assert config.controller.fleet == "gbrowse"
    assert config.stats.listen == "127.0.0.1:8990"
    assert config.master.renderfarm_conf == "/etc/gbrowse2/renderfarm.conf"
    assert config.aws.endpoint_url == ""
    assert config.aws.sqs_endpoint_url == ""
    assert config.slave.instance_types == ("m5.large",)
    assert [c.name for c in config.clusters] == ["smallcluster", "slurmcluster"]
    assert [c.load_source for c in config.clusters] == ["sge", "slurm"]
    assert [v.name for v in config.volumes] == ["segway-data"]
    assert [p.name for p in config.plugins] == ["segway-env", "sge", "slurm"]
    # The example documents the code's defaults for the policy's model of a slave.
    assert config.scaling.slave_capacity_rps == ScalingSection().slave_capacity_rps == 2.0
    assert config.scaling.boot_seconds == ScalingSection().boot_seconds == 90.0


def scaling_and_simulate(out: str) -> tuple[dict, dict]:
    resolved = tomllib.loads(out)
    return resolved["scaling"], resolved["simulate"]


def test_the_slave_model_is_read_from_scaling(capsys, write):
    path = write(FARM_HERE + "[scaling]\nslave_capacity_rps = 0.5\nboot_seconds = 60\n")
    rc, out, err = check(capsys, path)
    assert (rc, err) == (0, [])
    config = load_config(path)
    assert (config.scaling.slave_capacity_rps, config.scaling.boot_seconds) == (0.5, 60.0)
    assert config.notes == ()
    scaling, simulate = scaling_and_simulate(out)
    assert (scaling["slave_capacity_rps"], scaling["boot_seconds"]) == (0.5, 60.0)
    assert "slave_capacity_rps" not in simulate and "boot_seconds" not in simulate
    assert parse_config(tomllib.loads(out), str(path)) == config


def test_the_old_simulate_place_is_read_with_one_line_saying_to_move(capsys, write):
    path = write(
        FARM_HERE + "[simulate]\nslave_capacity_rps = 0.5\nboot_seconds = 60\nspot_price = 0.04\n"
    )
    rc, out, err = check(capsys, path)
    note = (
        f"{path}: simulate: move slave_capacity_rps and boot_seconds to [scaling], where the "
        "daemon's policy reads them ([simulate] is still read for now)"
    )
    assert (rc, err) == (0, [note])
    config = load_config(path)
    assert (config.scaling.slave_capacity_rps, config.scaling.boot_seconds) == (0.5, 60.0)
    assert config.simulate.spot_price == 0.04
    assert config.notes == (note,)
    # check-config prints them in their new place, which reads back equal and without the note.
    scaling, _ = scaling_and_simulate(out)
    assert (scaling["slave_capacity_rps"], scaling["boot_seconds"]) == (0.5, 60.0)
    again = parse_config(tomllib.loads(out), str(path))
    assert again == config
    assert again.notes == ()


def test_where_both_places_differ_scaling_wins_and_the_line_says_so(capsys, write):
    path = write(
        FARM_HERE + "[scaling]\nslave_capacity_rps = 1.5\nboot_seconds = 60\n"
        "[simulate]\nslave_capacity_rps = 0.5\nboot_seconds = 60\n"
    )
    rc, _, err = check(capsys, path)
    assert (rc, err) == (
        0,
        [
            f"{path}: simulate: move slave_capacity_rps and boot_seconds to [scaling], where the "
            "daemon's policy reads them ([simulate] is still read for now); "
            "simulate.slave_capacity_rps = 0.5 differs from scaling.slave_capacity_rps = 1.5: "
            "[scaling]'s is used"
        ],
    )
    config = load_config(path)
    assert (config.scaling.slave_capacity_rps, config.scaling.boot_seconds) == (1.5, 60.0)


def test_a_bad_value_in_the_old_place_is_named_there(capsys, write):
    rc, _, err = check(capsys, write("[simulate]\nboot_seconds = -1\n"))
    assert rc == 2
    assert len(err) == 1 and err[0].endswith(": simulate.boot_seconds: must be >= 0 (got -1)")


def test_empty_config_is_all_defaults():
    assert parse_config({}, "empty.toml") == Config(path="empty.toml")


def test_ints_are_accepted_for_floats_and_aliases_fold():
    config = parse_config(
        {
            "master": {"poll_interval": 45, "reload_command": "sudo /usr/sbin/apache2ctl graceful"},
            "slave": {"instance_type": "c5.large", "spot_bid": 1},
            "load_table": {"rows": [[0, 0, 1], [3, 1, 2]]},
        },
        "c.toml",
    )
    assert config.master.poll_interval == 45.0
    assert isinstance(config.master.poll_interval, float)
    assert config.master.reload_command == ("sudo", "/usr/sbin/apache2ctl", "graceful")
    assert config.slave.instance_types == ("c5.large",)
    assert config.slave.spot_bid == 1.0
    assert config.load_table.rows == (
        LoadRow(rps=0.0, min_instances=0, max_instances=1),
        LoadRow(rps=3.0, min_instances=1, max_instances=2),
    )


def test_cluster_extends_resolves_recursively_child_keys_win():
    config = parse_config(
        {
            "volume": {"data": {"volume_id": "vol-1", "mount_path": "/data"}},
            "cluster": {
                "base": {"node_instance_type": "m5.xlarge", "max_nodes": 4, "cluster_user": "u"},
                "mid": {"extends": "base", "cluster_size": 2, "volumes": ["data"]},
                "top": {"extends": "mid", "node_instance_types": ["c5.2xlarge", "c5a.2xlarge"]},
            },
        },
        "c.toml",
    )
    clusters = {c.name: c for c in config.clusters}
    assert clusters["base"] == ClusterSection(
        name="base", node_instance_types=("m5.xlarge",), max_nodes=4, cluster_user="u"
    )
    assert clusters["top"] == ClusterSection(
        name="top",
        extends="mid",
        node_instance_types=("c5.2xlarge", "c5a.2xlarge"),
        min_nodes=2,
        max_nodes=2,
        cluster_user="u",
        volumes=("data",),
    )


def test_render_round_trips_a_full_config_and_hides_the_token():
    data = {
        "controller": {"fleet": "render-farm.2", "on_exit": "leave"},
        "master": {"reload_command": [], "external_ip": "203.0.113.7", "poll_interval": 12.5},
        "load_table": {"rows": [[0.25, 0, 1], [4, 2, 10]]},
        "scaling": {
            "policy": "gbrowse",
            "max_cost_per_hour": 2,
            "interruption_queue": "",
            "slave_capacity_rps": 0.75,
            "boot_seconds": 45,
        },
        "simulate": {"boot_spread": 0.1, "spot_price": 0.02},
        "slave": {
            "instance_types": ["m5.large", "m5a.large"],
            "spot_bid": 0.1,
            "ports": [8101, 8102],
            "data_snapshots": ["snap-1", "snap-2"],
            "user_data": 'echo "héllo"\\\n\tdone\x01',
        },
        "aws": {
            "endpoint_url": "http://127.0.0.1:5000",
            "sqs_endpoint_url": "https://sqs.eu-west-1.amazonaws.com",
            "retry_mode": "standard",
        },
        "stats": {"listen": "[::1]:9000"},
        "volume": {"seg.data": {"snapshot_id": "snap-9", "mount_path": "/seg"}},
        "plugin": {
            "cmds": {"kind": "commands", "run": ["a", "b"], "n": 3, "f": 0.5, "on": True},
        },
        "cluster": {"c1": {"spot_bid": 0.3, "plugins": ["cmds"], "volumes": ["seg.data"]}},
    }
    config = parse_config(data, "full.toml")
    assert parse_config(tomllib.loads(render_toml(config)), "full.toml") == config

    secret = parse_config({"stats": {"token": "s3cr3t-bearer"}}, "t.toml")
    text = render_toml(secret)
    assert "s3cr3t-bearer" not in text
    assert 'token = "***"' in text


def test_sqs_endpoint_is_its_own_key_and_changing_it_needs_a_restart(write):
    """EC2's endpoint (often a VPC endpoint for EC2) serves no SQS: the queue has its own key."""
    from controller.config.reload import reload_problems

    path = write(
        '[aws]\nendpoint_url = "https://vpce-1a2b-ec2.us-east-1.vpce.amazonaws.com"\n'
        'sqs_endpoint_url = "https://vpce-3c4d-sqs.us-east-1.vpce.amazonaws.com"\n'
    )
    config = load_config(str(path))
    assert config.aws.endpoint_url == "https://vpce-1a2b-ec2.us-east-1.vpce.amazonaws.com"
    assert config.aws.sqs_endpoint_url == "https://vpce-3c4d-sqs.us-east-1.vpce.amazonaws.com"
    path.write_text(path.read_text().replace("vpce-3c4d", "vpce-5e6f"))
    (problem,) = reload_problems(config, load_config(str(path)))
    assert "aws.sqs_endpoint_url" in problem and "restart" in problem


def test_stats_on_a_public_address_needs_a_token(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[stats]\nlisten = "0.0.0.0:8990"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any("[stats] listen" in line or "listen" in line for line in err.value.errors)
    assert "set token or token_file, or listen on 127.0.0.1" in str(err.value.errors)
    path.write_text('[stats]\nlisten = "0.0.0.0:8990"\ntoken = "s3cret-token"\n')
    assert load_config(path).stats.listen == "0.0.0.0:8990"
    for ok in ("127.0.0.1:8990", "[::1]:8990", "localhost:8990", ""):
        path.write_text(f'[stats]\nlisten = "{ok}"\n')
        assert load_config(path).stats.listen == ok


def test_check_config_quiet_prints_only_problems(capsys, tmp_path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(REPO_CONFIG.read_text())
    assert main(["check-config", "--quiet", "-c", str(good)]) == 0
    assert capsys.readouterr().out == ""
    bad = tmp_path / "bad.toml"
    bad.write_text("[master]\npoll_interval = -1\n")
    assert main(["check-config", "-q", "-c", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "poll_interval" in captured.err


SLURM_CLUSTER = """
[cluster.c]
load_source = "slurm"
image_id = "ami-12345678"
max_nodes = 4
plugins = ["slurm"]

[plugin.slurm]
kind = "slurm"
conf_server = "head-1:6817"
cpus = 4
"""


def test_a_slurm_cluster_passes_check_config_and_iam_policy(capsys, write):
    path = write(SLURM_CLUSTER)
    rc, _, err = check(capsys, path)
    assert (rc, err) == (0, [])
    assert main(["iam-policy", "-c", str(path)]) == 0
    assert '"ec2:RunInstances"' in capsys.readouterr().out

"""`controller import-conf`: GBrowse's aws_balancer.conf becomes TOML that `parse_config` accepts;
a bad legacy file gets one line per problem naming FILE:LINE, and exit 2."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.cli import main
from controller.config.reader import ConfigError, parse_config
from controller.config.schema import LoadRow
from controller.gbrowse.import_conf import convert_aws_balancer_conf

SAMPLE = Path(__file__).resolve().parent / "data" / "aws_balancer.conf"

MINIMAL_SLAVE = "[SLAVE]\nimage_id = ami-1234abcd\n"


def convert(text: str, source: str = "aws_balancer.conf"):
    """Convert and parse the result the way `check-config` would."""
    toml = convert_aws_balancer_conf(text, source)
    return toml, parse_config(tomllib.loads(toml), source)


def test_seed_example_converts(capsys):
    rc = main(["import-conf", str(SAMPLE)])
    out, err = capsys.readouterr()
    assert (rc, err) == (0, "")
    config = parse_config(tomllib.loads(out), "converted.toml")

    assert config.master.poll_interval == 30.0  # 0.5 minutes
    assert config.master.server_status_url == "http://localhost/server-status?auto"
    assert config.master.external_ip == ""
    assert config.load_table.rows == (
        LoadRow(rps=0.1, min_instances=0, max_instances=1),
        LoadRow(rps=0.5, min_instances=0, max_instances=2),
        LoadRow(rps=1.0, min_instances=1, max_instances=3),
        LoadRow(rps=2.0, min_instances=2, max_instances=4),
    )
    slave = config.slave
    assert slave.instance_types == ("m3.large",)
    assert slave.spot_bid == 0.08
    assert slave.ports == (8101, 8102, 8103)
    assert slave.region == "us-east-1"
    assert slave.image_id == "ami-64de2a0d"
    assert slave.data_snapshots == ("snap-12345", "snap-abcdef")  # trailing comment dropped
    assert slave.availability_zone == "us-east-1a"
    assert (slave.subnet, slave.security_group) == ("", "")
    assert slave.ssh_key == "John_Doe_default"
    assert config.controller.on_exit == "teardown"
    assert "# not converted: renderer_threads = 4" in out


def test_gbrowse_defaults_fill_absent_keys_and_empty_values_are_unset():
    toml, config = convert(
        "[LOAD TABLE]\n1 0 1\n[MASTER]\npoll_interval = 1\n[SLAVE]\nspot_bid =\nregion =\n"
    )
    assert config.slave.instance_types == ("m1.large",)  # GBrowse's `|| 'm1.large'`
    assert config.slave.spot_bid == 0.08  # GBrowse's `|| 0.08`
    assert config.slave.region == ""  # the master's, from its instance metadata at run
    assert config.master.poll_interval == 60.0
    assert "GBrowse's default" in toml
    assert 'region = ""' in toml and "instance metadata" in toml


def test_an_absent_region_is_blank_too_not_us_east_1():
    toml, config = convert("[LOAD TABLE]\n1 0 1\n[MASTER]\npoll_interval = 1\n[SLAVE]\n")
    assert config.slave.region == ""
    assert toml.count("region =") == 1


def test_legacy_syntax_as_gbrowse_reads_it():
    text = (
        "stray line before any section\n"
        "[load table]\n"
        "   # indented comment\n"
        "\t0.2\t0\t2   # trailing comment\n"
        "[Master]\n"
        "server_status_url = http://127.0.0.1:8080/server-status?auto#frag\n"
        "poll_interval = 0.25\n"
        "poll_interval = 2\n"
        "[SLAVE]\n"
        "ports=8101\n"
        "image_id = ami-1234abcd\n"
        "access_key = AKIAIOSFODNN7EXAMPLE\n"
        "just some words\n"
        "[EXTRA]\n"
        "colour = blue\n"
    )
    toml, config = convert(text)
    assert config.load_table.rows == (LoadRow(rps=0.2, min_instances=0, max_instances=2),)
    assert config.master.poll_interval == 120.0  # the later line wins, as in GBrowse
    assert config.master.server_status_url == "http://127.0.0.1:8080/server-status?auto#frag"
    assert config.slave.ports == (8101,)
    assert "AKIAIOSFODNN7EXAMPLE" not in toml
    assert "# not converted: access_key (credentials" in toml
    assert "# not converted: just some words" in toml
    assert "# not converted: [EXTRA]" in toml
    assert "# not converted: colour = blue" in toml
    assert "# not converted: stray line before any section" in toml


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[LOAD TABLE]\n0.1 0 1\n0.5 0\n" + MINIMAL_SLAVE, 3, 'row "0.5 0": expected three'),
        ("[LOAD TABLE]\n0.1 zero 1\n" + MINIMAL_SLAVE, 2, "two whole numbers"),
        ("[LOAD TABLE]\n0.1 0 1\n0.5 0 2.5\n" + MINIMAL_SLAVE, 3, "two whole numbers"),
        (
            "[LOAD TABLE]\n0.1 0 1\n\n# c\n0.5 1 3\n0.5 0 2\n" + MINIMAL_SLAVE,
            6,
            'row "0.5 0 2": thresholds must increase (0.5 after 0.5)',
        ),
        ("[LOAD TABLE]\n0.1 2 1\n" + MINIMAL_SLAVE, 2, "min instances (2) is above max"),
        (
            "[LOAD TABLE]\n0.1 0 1\n[MASTER]\npoll_interval = half a minute\n" + MINIMAL_SLAVE,
            4,
            "[MASTER] poll_interval: expected a number of minutes above 0",
        ),
        ("[LOAD TABLE]\n0.1 0 1\n[MASTER]\npoll_interval = 0\n" + MINIMAL_SLAVE, 4, "above 0"),
        ("[LOAD TABLE]\n0.1 0 1\n[SLAVE]\nspot_bid = cheap\n", 4, "[SLAVE] spot_bid: expected"),
        ("[LOAD TABLE]\n0.1 0 1\n[SLAVE]\nports = 8101 http\n", 4, "port numbers"),
        ("[LOAD TABLE]\n0.1 0 1\n[SLAVE]\nports = 8101 99999\n", 4, "port must be 1..65535"),
        ("[LOAD TABLE]\n0.1 0 1\n[SLAVE]\nimage_id = my-ami\n", 4, "[SLAVE] image_id: expected"),
        (
            "[LOAD TABLE]\n0.1 0 1\n[SLAVE]\ninstance_type = large\n",
            4,
            "[SLAVE] instance_type: expected an EC2 instance type",
        ),
        (
            "[LOAD TABLE]\n0.1 0 1\n[MASTER]\nserver_status_url = localhost/status\n[SLAVE]\n",
            4,
            "[MASTER] server_status_url: expected an http",
        ),
    ],
)
def test_malformed_input_names_file_and_line(capsys, tmp_path, text, line, words):
    path = tmp_path / "aws_balancer.conf"
    path.write_text(text)
    rc = main(["import-conf", str(path)])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:{line}: "), lines[0]
    assert words in lines[0]


def test_rows_out_of_order_are_sorted_as_gbrowse_did():
    """GBrowse kept [LOAD TABLE] in a hash and sorted it: a file listing rows out of order
    was valid for it, so it converts, in order, saying so."""
    toml, config = convert("[LOAD TABLE]\n1.0 1 3\n0.1 0 1\n0.5 0 2\n" + MINIMAL_SLAVE)
    assert [(r.rps, r.min_instances, r.max_instances) for r in config.load_table.rows] == [
        (0.1, 0, 1),
        (0.5, 0, 2),
        (1.0, 1, 3),
    ]
    assert "# sorted by requests/sec (the file lists them out of order)" in toml
    assert "sorted by" not in convert("[LOAD TABLE]\n0.1 0 1\n0.5 0 2\n" + MINIMAL_SLAVE)[0]


def test_missing_sections_are_reported():
    with pytest.raises(ConfigError) as caught:
        convert_aws_balancer_conf("[MASTER]\npoll_interval = 0.5\n", "old.conf")
    assert caught.value.errors == (
        "old.conf: no [LOAD TABLE] section (GBrowse requires [LOAD TABLE] and [SLAVE])",
        "old.conf: no [SLAVE] section (GBrowse requires [LOAD TABLE] and [SLAVE])",
    )


def test_unreadable_file(capsys, tmp_path):
    path = tmp_path / "missing.conf"
    rc = main(["import-conf", str(path)])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    assert err == f"{path}: cannot read: No such file or directory\n"


_rows = st.lists(
    st.tuples(
        st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False),
        st.integers(0, 20),
        st.integers(0, 20),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda row: row[0],
)


@given(_rows)
def test_any_valid_table_survives_conversion(rows):
    rows = sorted((rps, min(a, b), max(a, b)) for rps, a, b in rows)
    table = "\n".join(f"{rps}  {low}  {high}" for rps, low, high in rows)
    _, config = convert(f"[LOAD TABLE]\n{table}\n{MINIMAL_SLAVE}")
    assert config.load_table.rows == tuple(
        LoadRow(rps=float(rps), min_instances=low, max_instances=high) for rps, low, high in rows
    )


def test_credentials_are_never_copied_into_the_output():
    toml, _ = convert(
        "[LOAD TABLE]\n0.1 0 1\n"
        "[SLAVE]\nsecret_key = wJalrXUtnFEMI\nAWS_SECRET_ACCESS_KEY wJalrXUtnFEMI\n"
        "[CREDENTIALS]\naccess_key = AKIAIOSFODNN7EXAMPLE\n"
    )
    assert "wJalrXUtnFEMI" not in toml
    assert "AKIAIOSFODNN7EXAMPLE" not in toml
    assert "# not converted: a line naming credentials (not copied)" in toml

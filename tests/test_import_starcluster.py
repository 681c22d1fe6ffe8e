"""`controller import-conf --starcluster`: a StarCluster config becomes TOML that `check-config`
accepts, with one `# not carried over:` line per setting it cannot carry and no secret copied;
a file StarCluster itself would refuse gets one FILE:LINE line per problem, and exit 2."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.cli import main
from controller.config.plugins import cluster_plugins
from controller.config.reader import ConfigError, load_config, parse_config
from controller.gridengine.starcluster_import import convert_starcluster_config

SAMPLE = Path(__file__).resolve().parent / "data" / "starcluster.cfg"
SECRETS = (
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "hunter2-proxy-secret",
    "notebook-secret-42",
    "123456789012",
)


def convert(text: str, source: str = "config", **kwargs):
    """Convert and read the result as `check-config` does (plugins included)."""
    toml = convert_starcluster_config(text, source, **kwargs)
    config = parse_config(tomllib.loads(toml), source)
    for cluster in config.clusters:
        cluster_plugins(config, cluster)
    return toml, config


def cluster(config, name):
    return next(c for c in config.clusters if c.name == name)


def problems(text: str, source: str = "config") -> list[str]:
    with pytest.raises(ConfigError) as info:
        convert_starcluster_config(text, source)
    return list(info.value.errors)


def test_seed_config_converts_and_passes_check_config(capsys, tmp_path):
    assert main(["import-conf", "--starcluster", str(SAMPLE)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    converted = tmp_path / "config.toml"
    converted.write_text(out)
    assert main(["check-config", "-c", str(converted)]) == 0
    capsys.readouterr()
    config = load_config(converted)

    assert config.slave.region == "us-west-2"
    small = cluster(config, "smallcluster")
    assert (small.min_nodes, small.max_nodes) == (1, 1)  # CLUSTER_SIZE = 2 with its master
    assert small.node_instance_types == ("m1.large",)
    assert small.image_id == "ami-a5c42dcc"
    assert small.cluster_user == "sgeadmin"
    assert small.ssh_key_file == "/etc/controller/gsg-keypair.rsa"
    assert small.volumes == ("segway-data", "segway-build", "segway-results")
    assert small.plugins == ("segway-setup", "segway-setup-motd", "sge")
    assert small.spot_bid is None
    volumes = {v.name: v for v in config.volumes}
    assert (volumes["segway-build"].volume_id, volumes["segway-build"].mount_path) == (
        "vol-XXXXXXXX",
        "/segway-build",
    )
    kinds = [type(p).__name__ for p in cluster_plugins(config, small)]
    assert kinds == ["ProfilePlugin", "MotdPlugin", "SgePlugin"]
    profile = cluster_plugins(config, small)[0]
    assert (profile.base, profile.path) == ("/segway-build", "/etc/profile.d/segway.sh")


def test_extends_chain_resolves_as_starcluster_does():
    _, config = convert(SAMPLE.read_text(), str(SAMPLE))
    medium = cluster(config, "mediumcluster")
    assert (medium.max_nodes, medium.spot_bid) == (7, 0.26)
    assert medium.node_instance_types == ("m1.xlarge",)
    assert medium.image_id == "ami-a5c42dcc"  # from smallcluster
    assert medium.volumes == ("segway-data", "segway-build", "segway-results")
    large = cluster(config, "largecluster")
    assert (large.min_nodes, large.max_nodes, large.spot_bid) == (15, 15, 0.26)
    # StarCluster: 2 m2.2xlarge first, then m2.xlarge; here m2.xlarge, m2.2xlarge on capacity
    assert large.node_instance_types == ("m2.xlarge", "m2.2xlarge")
    assert large.availability_zone == "us-west-2a"
    # ipcluster (a Python plugin) is left out; Grid Engine still comes last
    assert large.plugins == ("segway-setup", "segway-setup-motd", "pkginstaller", "sge")
    assert (cluster(config, "smallcluster32").max_nodes, large.ssh_key_file) == (
        0,
        "/etc/controller/gsg-keypair.rsa",
    )


def test_every_setting_not_carried_gets_one_line_and_secrets_are_never_copied():
    toml, _ = convert(SAMPLE.read_text(), str(SAMPLE))
    for secret in SECRETS:
        assert secret not in toml
    notes = [line for line in toml.splitlines() if line.startswith("# not carried over: ")]
    for setting in (
        "[aws info] AWS_ACCESS_KEY_ID",
        "[aws info] AWS_SECRET_ACCESS_KEY",
        "[aws info] AWS_PROXY_PASS",
        "[global] DEFAULT_TEMPLATE = smallcluster",
        "[global] ENABLE_EXPERIMENTAL",
        "MASTER_INSTANCE_TYPE = m1.large",
        "DEVICE = /dev/sdz",
        "PERMISSIONS = www",
        "[permission www]",
        "[plugin ipcluster]",
        "NODE_INSTANCE_TYPE entries m2.2xlarge:2",
    ):
        matching = [n for n in notes if n.startswith(f"# not carried over: {setting}")]
        assert len(matching) == 1, (setting, notes)
        assert matching[0].endswith(")")  # and says why
    assert "AWS chain" in next(n for n in notes if "AWS_SECRET_ACCESS_KEY" in n)
    assert sum("CLUSTER_SHELL" in n for n in notes) == 2  # smallcluster and smallcluster32


def test_secrets_anywhere_are_named_but_not_copied():
    toml, _ = convert(
        "[global]\naws_secret_access_key = s3cr3t-global\n"
        "[DEFAULT]\nproxy_password = s3cr3t-default\n"
        "[cluster c]\nNODE_IMAGE_ID = ami-12345678\nMY_API_TOKEN = s3cr3t-token\n"
    )
    assert "s3cr3t" not in toml
    assert "MY_API_TOKEN (value not copied)" in toml


def test_extends_cycle_is_refused_with_one_line(capsys, tmp_path):
    path = tmp_path / "config"
    path.write_text(
        "[cluster a]\nEXTENDS = b\nCLUSTER_SIZE = 2\n"
        "[cluster b]\nEXTENDS = a\n"
        "[cluster c]\nEXTENDS = a\n"
    )
    assert main(["import-conf", "--starcluster", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}:5: [cluster b] EXTENDS: EXTENDS cycle a -> b -> a: break it "
        "(StarCluster refuses it too)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[cluster a]\nEXTENDS = a\n", "config:2: [cluster a] EXTENDS: EXTENDS cycle a -> a"),
        ("[cluster a]\nEXTENDS = nope\n", "config:2: [cluster a] EXTENDS: no [cluster nope]"),
        ("[cluster a]\nVOLUMES = v\n", "config:2: [cluster a] VOLUMES: no [volume v] section"),
        ("[cluster a]\nPLUGINS = p\n", "config:2: [cluster a] PLUGINS: no [plugin p] section"),
        ("[cluster a]\nKEYNAME = k\n", "config:2: [cluster a] KEYNAME: no [key k] section"),
        ("[key k]\n[cluster a]\nKEYNAME = k\n", "config:1: [key k]: no KEY_LOCATION"),
        ("[cluster a]\nCLUSTER_SIZE = two\n", "config:2: [cluster a] CLUSTER_SIZE: expected"),
        ("[cluster a]\nCLUSTER_SIZE = 0\n", "config:2: [cluster a] CLUSTER_SIZE: expected"),
        ("[cluster a]\nSPOT_BID = nan\n", "config:2: [cluster a] SPOT_BID: expected US dollars"),
        ("[cluster a]\nDISABLE_QUEUE = maybe\n", "config:2: [cluster a] DISABLE_QUEUE: expected"),
        ("[volume v]\nMOUNT_PATH = /v\n", "config:1: [volume v]: no VOLUME_ID"),
        ("[plugin p]\nFOO = 1\n", "config:1: [plugin p]: no SETUP_CLASS"),
        ("[cluster]\nCLUSTER_SIZE = 1\n", "config:1: [cluster]: expected [cluster NAME]"),
        ("[cluster a/b]\n", "config:1: [cluster a/b]: the name 'a/b' must be"),
        ("CLUSTER_SIZE = 1\n", "config:1: a line before any [section] header"),
        ("[cluster a]\njust words\n", "config:2: expected KEY = VALUE or a [section] header"),
        # found by the config reader, reported at the StarCluster line the key came from
        ("[cluster a]\n\nNODE_IMAGE_ID = emi-1234\n", "config:3: [cluster a] NODE_IMAGE_ID: "),
        ("[cluster a]\nNODE_INSTANCE_TYPE = huge\n", "config:2: [cluster a] NODE_INSTANCE_TYPE:"),
        (
            "[cluster a]\nPLUGINS = s\n[plugin s]\nSETUP_CLASS = segway_plugin.Setup\n"
            "SEGWAY_PATH = segway build\n",
            "config:5: [plugin s] SEGWAY_PATH: expected an absolute path",
        ),
    ],
)
def test_a_file_starcluster_would_refuse_names_file_line_and_setting(text, expected):
    errors = problems(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_unreadable_file_and_bad_arguments(capsys, tmp_path):
    missing = tmp_path / "nope"
    assert main(["import-conf", "--starcluster", str(missing)]) == 2
    assert capsys.readouterr().err == f"{missing}: cannot read: No such file or directory\n"
    assert main(["import-conf"]) == 2
    assert main(["import-conf", "a.conf", "--starcluster", "b.cfg"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["controller import-conf: give either AWS_BALANCER_CONF or --starcluster "
                   "STARCLUSTER_CONFIG"] * 2  # fmt: skip


def test_python2_configparser_syntax_as_starcluster_reads_it():
    _, config = convert(
        "[DEFAULT]\nCLUSTER_USER = fromdefault\n"
        "[global]\n"
        "[cluster a]\n"
        "NODE_IMAGE_ID: ami-1234abcd ; inline comment after whitespace\n"
        "CLUSTER_SIZE = 3 # inline comment\n"
        "cluster_size = 4\n"  # keys are case-insensitive: the later one wins
        "Volumes = v1,\n"
        "   v2\n"  # a continuation line
        "; a comment\n"
        "rem a comment too\n"
        "AVAILABILITY_ZONE = us-east-1a#not-a-comment\n"
        'SUBNET_ID = ""\n'
        "[volume v1]\nVOLUME_ID = vol-1\nMOUNT_PATH = /v1\n"
        "[vol v2]\nVOLUME_ID = vol-2\nMOUNT_PATH = /v2\n"
        "[cluster a]\nSPOT_BID = 0.5\n"  # a header seen again continues the section
    )
    a = cluster(config, "a")
    assert a.image_id == "ami-1234abcd"
    assert (a.min_nodes, a.max_nodes, a.spot_bid) == (3, 3, 0.5)
    assert a.volumes == ("v1", "v2")
    assert a.availability_zone == "us-east-1a#not-a-comment"
    assert (a.subnet, a.cluster_user) == ("", "fromdefault")


def test_an_empty_volume_list_clears_the_parents_as_in_starcluster():
    _, config = convert(
        "[cluster a]\nVOLUMES = v\n[cluster b]\nEXTENDS = a\nVOLUMES =\n"
        "[volume v]\nVOLUME_ID = vol-1\nMOUNT_PATH = /v\n"
    )
    assert (cluster(config, "a").volumes, cluster(config, "b").volumes) == (("v",), ())


def test_grid_engine_plugin_disable_queue_and_package_installer():
    _, config = convert(
        "[cluster base]\nNODE_IMAGE_ID = ami-1234abcd\nPLUGINS = apt\n"
        "[cluster own-sge]\nEXTENDS = base\nDISABLE_QUEUE = True\nPLUGINS = apt, grid\n"
        "[cluster no-queue]\nEXTENDS = base\nDISABLE_QUEUE = yes\n"
        "[cluster child]\nEXTENDS = no-queue\nCLUSTER_SIZE = 3\n"
        "[plugin apt]\nSETUP_CLASS = starcluster.plugins.pkginstaller.PackageInstaller\n"
        "PACKAGES = htop, r-base\n"
        "[plugin grid]\nSETUP_CLASS = starcluster.plugins.sge.SGEPlugin\n"
        "MASTER_IS_EXEC_HOST = False\nSLOTS_PER_HOST = 4\n"
    )
    assert cluster(config, "base").plugins == ("apt", "sge")
    assert cluster(config, "own-sge").plugins == ("apt", "grid")
    assert cluster(config, "no-queue").plugins == ("apt",)
    assert cluster(config, "child").plugins == ("apt",)  # inherits DISABLE_QUEUE and PLUGINS
    grid = cluster_plugins(config, cluster(config, "own-sge"))[1]
    assert grid.head_is_exec_host is False
    apt = cluster_plugins(config, cluster(config, "base"))[0]
    assert apt.commands[-1].endswith("apt-get install -y -q htop r-base")


def test_a_plugin_named_sge_keeps_its_name_and_grid_engine_gets_another():
    toml, config = convert("[cluster a]\nPLUGINS = sge\n[plugin sge]\nSETUP_CLASS = my.own.Thing\n")
    assert cluster(config, "a").plugins == ("sge-2",)
    assert "# not carried over: [plugin sge] (SETUP_CLASS = my.own.Thing:" in toml


def test_include_files_are_read_as_starcluster_appends_them(tmp_path):
    included = {"~/.starcluster/clusters": "[cluster extra]\nCLUSTER_SIZE = 5\n"}
    _, config = convert(
        "[global]\nINCLUDE = ~/.starcluster/clusters\n", read_include=included.__getitem__
    )
    assert cluster(config, "extra").max_nodes == 4
    with pytest.raises(ConfigError, match=r"config:3: \[global\] INCLUDE: .*URL is not fetched"):
        convert_starcluster_config("[global]\n\nINCLUDE = http://example.org/c\n", "config")

    def unreadable(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(ConfigError, match=r"cannot read /x: No such file or directory"):
        convert_starcluster_config("[global]\nINCLUDE = /x\n", "config", read_include=unreadable)


def test_aws_region_host_of_another_cloud_becomes_the_endpoint():
    _, config = convert(
        "[aws info]\nAWS_REGION_HOST = euca.example.org\nAWS_PORT = 8773\n"
        "AWS_IS_SECURE = False\nAWS_EC2_PATH = /services/Eucalyptus\n"
    )
    assert config.aws.endpoint_url == "http://euca.example.org:8773/services/Eucalyptus"
    toml, config = convert("[aws info]\nAWS_REGION_HOST = ec2.eu-west-1.amazonaws.com\n")
    assert config.aws.endpoint_url == ""
    assert "# not carried over: [aws info] AWS_REGION_HOST (AWS's own endpoint" in toml


# Arbitrary StarCluster files: EXTENDS forests with settings on any template.
_NAMES = ("a", "b", "c", "d", "e")


@st.composite
def extends_forests(draw):
    templates = {}
    for i, name in enumerate(_NAMES[: draw(st.integers(1, len(_NAMES)))]):
        settings_ = {}
        if i and draw(st.booleans()):
            settings_["EXTENDS"] = draw(st.sampled_from(_NAMES[:i]))  # parents come first
        if draw(st.booleans()):
            settings_["CLUSTER_SIZE"] = str(draw(st.integers(1, 50)))
        if draw(st.booleans()):
            settings_["SPOT_BID"] = str(draw(st.sampled_from([0.05, 0.26, 1.5])))
        if draw(st.booleans()):
            settings_["NODE_INSTANCE_TYPE"] = draw(st.sampled_from(["m1.large", "c1.xlarge"]))
        if draw(st.booleans()):
            settings_["DISABLE_QUEUE"] = draw(st.sampled_from(["True", "False"]))
        templates[name] = settings_
    return templates


@given(extends_forests())
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_any_extends_forest_resolves_like_starcluster(templates):
    text = "".join(
        f"[cluster {name}]\n" + "".join(f"{k} = {v}\n" for k, v in body.items())
        for name, body in templates.items()
    )
    _, config = convert(text)
    for name in templates:
        chain, resolved = [name], {}
        while "EXTENDS" in templates[chain[-1]]:
            chain.append(templates[chain[-1]]["EXTENDS"])
        for link in reversed(chain):
            resolved.update(templates[link])
        ours = cluster(config, name)
        if "CLUSTER_SIZE" in resolved:
            size = int(resolved["CLUSTER_SIZE"]) - 1
            assert (ours.min_nodes, ours.max_nodes) == (size, size)
        assert ours.spot_bid == (float(resolved["SPOT_BID"]) if "SPOT_BID" in resolved else None)
        if "NODE_INSTANCE_TYPE" in resolved:
            assert ours.node_instance_types == (resolved["NODE_INSTANCE_TYPE"],)
        queue = resolved.get("DISABLE_QUEUE") != "True"
        assert ours.plugins == (("sge",) if queue else ())


_HEADERS = ("global", "aws info", "cluster a", "cluster b", "volume v", "plugin p", "key k",
            "DEFAULT", "permission w", "cluster", "other", "vol v", "cluster a.b")  # fmt: skip
_KEYS = {
    "cluster": ("EXTENDS", "CLUSTER_SIZE", "VOLUMES", "PLUGINS", "KEYNAME", "SPOT_BID",
                "NODE_INSTANCE_TYPE", "NODE_IMAGE_ID", "DISABLE_QUEUE", "x"),
    "volume": ("VOLUME_ID", "MOUNT_PATH", "DEVICE", "x"),
    "vol": ("VOLUME_ID", "MOUNT_PATH", "x"),
    "plugin": ("SETUP_CLASS", "segway_path", "PACKAGES", "MASTER_IS_EXEC_HOST", "x"),
    "key": ("KEY_LOCATION", "x"),
    "global": ("INCLUDE", "DEFAULT_TEMPLATE", "x"),
    "aws": ("AWS_REGION_HOST", "AWS_PORT", "AWS_REGION_NAME", "AWS_SECRET_ACCESS_KEY", "x"),
}  # fmt: skip
_ALL_KEYS = tuple({key for keys in _KEYS.values() for key in keys})
_VALUES = ("a", "b", "v", "p", "k", "1", "0", "-3", "0.2", "nan", "ami-1234abcd", "vol-1", "/v",
           "segway_plugin.Setup", "starcluster.plugins.sge.SGEPlugin", "True", "a, b", "",
           "starcluster.plugins.pkginstaller.PackageInstaller", "m1.large:2, c1.xlarge",
           "h.example.org", "~/x", "\"\"", "rel path")  # fmt: skip
_OTHER_LINE = st.sampled_from(["", "# comment", "   continued", "rem x", "no equals sign"])


@st.composite
def starcluster_files(draw) -> str:
    """INI text shaped like a StarCluster config: sections holding mostly their own keys."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        header = draw(st.sampled_from(_HEADERS))
        lines.append(f"[{header}]")
        keys = _KEYS.get(header.split()[0], _ALL_KEYS)
        for _ in range(draw(st.integers(0, 6))):
            if draw(st.integers(0, 9)) == 0:
                lines.append(draw(_OTHER_LINE))
                continue
            key = draw(st.sampled_from(keys))
            value = draw(st.one_of(st.sampled_from(_VALUES), st.text(max_size=12)))
            separator = draw(st.sampled_from([" = ", "=", ": "]))
            lines.append(key + separator + value + draw(st.sampled_from(["", " # c", " ; c"])))
    return "\n".join(lines)


def _clean_or_valid(text: str) -> None:
    try:
        toml = convert_starcluster_config(text, "fuzz.cfg", read_include=lambda p: "[other]\n")
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            assert line.startswith("fuzz.cfg"), line
            assert "\n" not in line
        return
    config = parse_config(tomllib.loads(toml), "fuzz.cfg")  # what check-config accepts
    for c in config.clusters:
        cluster_plugins(config, c)
    assert re.search(r"^\[controller\]$", toml, re.M)


@given(starcluster_files())
@settings(max_examples=400, deadline=None)
def test_any_ini_shaped_text_converts_or_raises_only_the_clean_error(text):
    _clean_or_valid(text)


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_text_converts_or_raises_only_the_clean_error(text):
    _clean_or_valid(text)

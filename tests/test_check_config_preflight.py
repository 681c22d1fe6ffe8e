"""`controller check-config` finds what a real run would trip over: an unknown region, a
placeholder image id, a token or key file that is missing or readable by others, a cluster whose
plugins name no scheduler. Its exit code is about the config: what this machine lacks (GBrowse's
directory, the instance metadata a blank region or image_id comes from) is a note, exit 0.
One line each, naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.commands.preflight import known_regions
from controller.runtime.logs import reset_logging

GOOD_AMI = "ami-0123456789abcdef0"
SGE = '\n[plugin.sge]\nkind = "sge"\n'
FROM_METADATA = (
    "blank: taken from the master's instance metadata at run; set it if the master is not on EC2"
)


@pytest.fixture(autouse=True)
def _logging_back_to_defaults():
    """`main(["run", ...])` points the logs at this test's captured stderr, closed after it."""
    yield
    reset_logging()


@pytest.fixture
def farm(tmp_path: Path) -> Path:
    (tmp_path / "gbrowse2").mkdir()
    return tmp_path / "gbrowse2" / "renderfarm.conf"


def write_config(tmp_path: Path, farm: Path, extra: str = "", **slave: str) -> Path:
    slave = {"region": "us-east-1", "image_id": GOOD_AMI, **slave}
    lines = [f'{k} = "{v}"' for k, v in slave.items()]
    text = f'[master]\nrenderfarm_conf = "{farm}"\n\n[slave]\n' + "\n".join(lines) + "\n" + extra
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def check(capsys, path: Path) -> tuple[int, str, list[str]]:
    rc = main(["check-config", "-c", str(path)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.splitlines()


def secret(tmp_path: Path, name: str, mode: int, text: str = "s3cret\n") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_good_config_passes_and_prints(capsys, tmp_path, farm):
    token = secret(tmp_path, "token", 0o600)
    path = write_config(tmp_path, farm, f'\n[stats]\ntoken_file = "{token}"\n')
    rc, out, err = check(capsys, path)
    assert (rc, err) == (0, [])
    assert f'renderfarm_conf = "{farm}"' in out


def test_botocore_knows_the_regions_offline():
    regions = known_regions()
    assert {"us-east-1", "eu-west-1", "ap-southeast-2", "us-gov-west-1"} <= regions
    assert "us-esat-1" not in regions


def test_an_unknown_region_is_named_with_a_suggestion(capsys, tmp_path, farm):
    rc, out, err = check(capsys, write_config(tmp_path, farm, region="eu-wset-1"))
    assert (rc, out) == (2, "")
    assert len(err) == 1
    assert err[0].startswith(f"{tmp_path / 'config.toml'}: slave.region: unknown region")
    assert "did you mean 'eu-west-1'?" in err[0]


def test_any_region_goes_with_an_endpoint_of_its_own(capsys, tmp_path, farm):
    extra = '\n[aws]\nendpoint_url = "http://127.0.0.1:5000"\n'
    rc, _, err = check(capsys, write_config(tmp_path, farm, extra, region="local"))
    assert (rc, err) == (0, [])


@pytest.mark.parametrize(
    "image", ["ami-xxxxxxxx", "ami-xxxx", "ami-1", "ami-0ABCDEF12", "ami-1234567"]
)
def test_a_placeholder_image_id_is_refused(capsys, tmp_path, farm, image):
    rc, _, err = check(capsys, write_config(tmp_path, farm, image_id=image))
    assert rc == 2 and len(err) == 1
    assert f"slave.image_id: {image!r} is a placeholder" in err[0]
    assert "describe-images" in err[0]


def test_an_all_zero_image_id_is_a_note_as_an_examples_placeholder(capsys, tmp_path, farm):
    rc, _, err = check(capsys, write_config(tmp_path, farm, image_id="ami-00000000"))
    assert rc == 0 and len(err) == 1
    assert "slave.image_id: 'ami-00000000' looks like an example's placeholder" in err[0]


@pytest.mark.parametrize("image", ["ami-12345678", "ami-0123456789abcdef0"])
def test_real_image_ids_pass(capsys, tmp_path, farm, image):
    assert check(capsys, write_config(tmp_path, farm, image_id=image))[0] == 0


def test_a_cluster_placeholder_image_is_named_by_its_section(capsys, tmp_path, farm):
    extra = '\n[cluster.small]\nimage_id = "ami-xxxxxxxx"\nplugins = ["sge"]\n' + SGE
    rc, _, err = check(capsys, write_config(tmp_path, farm, extra))
    assert rc == 2 and len(err) == 1
    assert ": cluster.small.image_id: 'ami-xxxxxxxx' is a placeholder" in err[0]


@pytest.mark.parametrize(
    ("mode", "text", "words"),
    [
        (0o644, "s3cret\n", "is readable by its group or others (mode 0644); chmod 600"),
        (0o640, "s3cret\n", "is readable by its group or others (mode 0640)"),
        (0o600, "", "is empty; put the token in it"),
    ],
)
def test_a_token_file_readable_by_others_or_empty_is_refused(
    capsys, tmp_path, farm, mode, text, words
):
    token = secret(tmp_path, "token", mode, text)
    path = write_config(tmp_path, farm, f'\n[stats]\ntoken_file = "{token}"\n')
    rc, _, err = check(capsys, path)
    assert rc == 2 and len(err) == 1
    assert f"stats.token_file: {token} {words}" in err[0]
    assert "s3cret" not in err[0]


def test_a_missing_token_file_is_refused(capsys, tmp_path, farm):
    missing = tmp_path / "nope"
    path = write_config(tmp_path, farm, f'\n[stats]\ntoken_file = "{missing}"\n')
    rc, _, err = check(capsys, path)
    assert rc == 2
    assert err == [
        f"{path}: stats.token_file: {missing} does not exist; create it (mode 600) or fix the path"
    ]


def test_a_relative_token_file_is_checked_in_the_credentials_directory(
    capsys, tmp_path, farm, monkeypatch
):
    path = write_config(tmp_path, farm, '\n[stats]\ntoken_file = "stats-token"\n')
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    rc, _, err = check(capsys, path)  # outside the service: a note, not a problem
    assert rc == 0 and len(err) == 1 and "$CREDENTIALS_DIRECTORY" in err[0]

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    rc, _, err = check(capsys, path)
    assert rc == 2 and f"{credentials / 'stats-token'} does not exist" in err[0]
    secret(credentials, "stats-token", 0o400)
    assert check(capsys, path)[:3:2] == (0, [])


def test_a_token_file_is_not_read_when_the_endpoint_is_off(capsys, tmp_path, farm):
    extra = f'\n[stats]\nlisten = ""\ntoken_file = "{tmp_path / "nope"}"\n'
    assert check(capsys, write_config(tmp_path, farm, extra))[0] == 0


def test_ssh_key_files_get_a_note_naming_the_command_that_needs_them(capsys, tmp_path, farm):
    key = secret(tmp_path, "key", 0o644)
    extra = (
        f'\n[sync]\nssh_key_file = "{key}"\n'
        f'\n[cluster.small]\nssh_key_file = "{tmp_path / "missing"}"\n'
        f'image_id = "{GOOD_AMI}"\nplugins = ["sge"]\n{SGE}'
    )
    rc, out, err = check(capsys, write_config(tmp_path, farm, extra))
    assert rc == 0 and out  # `run` of the render farm reads neither
    assert len(err) == 2
    assert f"sync.ssh_key_file: {key} is readable by its group or others" in err[0]
    assert err[0].endswith("(sync-data needs it)")
    assert "cluster.small.ssh_key_file: " in err[1] and "does not exist" in err[1]
    assert err[1].endswith("(run --cluster small needs it)")
    key.chmod(0o600)
    extra = f'\n[sync]\nssh_key_file = "{key}"\n'
    assert check(capsys, write_config(tmp_path, farm, extra))[:3:2] == (0, [])


def test_a_renderfarm_conf_in_a_missing_directory_is_a_note_not_a_problem(capsys, tmp_path):
    """A valid config checked before GBrowse is installed passes; `run` refuses to start."""
    farm = tmp_path / "no-gbrowse" / "renderfarm.conf"
    rc, out, err = check(capsys, write_config(tmp_path, farm))
    assert rc == 0 and out and len(err) == 1
    assert f"master.renderfarm_conf: directory {farm.parent} does not exist (yet)" in err[0]
    assert "`run` refuses to start until it does" in err[0]


def test_a_cluster_config_needs_no_gbrowse_directory(capsys, tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text(
        f'[slave]\nimage_id = "{GOOD_AMI}"\n\n[cluster.small]\nmax_nodes = 2\n'
        f'image_id = "{GOOD_AMI}"\nplugins = ["sge"]\n{SGE}'
    )
    rc, _, err = check(capsys, path)
    assert (rc, err) == (0, [])


@pytest.mark.parametrize("load_source", ["sge", "slurm"])
def test_a_cluster_without_its_scheduler_plugin_is_refused_with_runs_line(
    capsys, tmp_path, farm, load_source
):
    extra = f'\n[cluster.small]\nload_source = "{load_source}"\nimage_id = "{GOOD_AMI}"\n'
    path = write_config(tmp_path, farm, extra)
    rc, out, err = check(capsys, path)
    scheduler = "Slurm" if load_source == "slurm" else "Grid Engine"
    line = (
        f'{path}: [cluster.small] plugins: none is of kind "{load_source}": add a [plugin.X] '
        f'with kind = "{load_source}" so nodes join {scheduler} and its queue drives the cluster'
    )
    assert (rc, out, err) == (2, "", [line])
    # `run --cluster small` refuses to start with the same line, before any cloud call.
    assert main(["run", "-c", str(path), "--cluster", "small", "--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_blank_region_and_image_are_notes_and_the_metadata_is_not_asked(
    capsys, tmp_path, farm, monkeypatch
):
    """check-config never asks the metadata service, even when it is allowed to."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")  # nothing
    extra = '\n[cluster.small]\nplugins = ["sge"]\n' + SGE
    path = write_config(tmp_path, farm, extra, region="", image_id="")
    rc, out, err = check(capsys, path)
    assert rc == 0 and 'region = ""' in out
    assert err == [
        f"{path}: slave.region: {FROM_METADATA}",
        f"{path}: slave.image_id: {FROM_METADATA}",
        f"{path}: cluster.small.image_id: {FROM_METADATA}",
    ]


@pytest.mark.parametrize(
    ("url", "noted"),
    [
        ("http://127.0.0.1/server-status", True),
        ("http://127.0.0.1/server-status?refresh=5", True),
        ("http://127.0.0.1/server-status?auto", False),
        ("http://127.0.0.1/server-status?refresh=5&auto", False),
    ],
)
def test_a_status_url_without_auto_is_a_note(capsys, tmp_path, farm, url, noted):
    path = write_config(tmp_path, farm)
    path.write_text(
        path.read_text().replace("[master]\n", f'[master]\nserver_status_url = "{url}"\n')
    )
    rc, _, err = check(capsys, path)
    assert rc == 0
    assert err == (
        [
            f"{path}: master.server_status_url: {url!r} does not ask for ?auto: mod_status then "
            "answers its HTML page, which the load sampler cannot read (each reading fails); "
            "add ?auto"
        ]
        if noted
        else []
    )


def test_quiet_prints_the_problems_only(capsys, tmp_path, farm):
    rc = main(["check-config", "-q", "-c", str(write_config(tmp_path, farm, image_id="ami-x"))])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and "slave.image_id" in captured.err

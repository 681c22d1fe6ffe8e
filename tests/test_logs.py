"""Logging as configured for `controller run`: levels by verbosity, JSON off a terminal or into a
logfile, stdlib libraries only from WARNING, and no secret ever in the captured output."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys

import pytest
import structlog

from controller.runtime.logs import (
    configure_logging,
    dropped_lines,
    is_secret_key,
    mask_secrets,
    reopen_logfile,
    reset_logging,
)

ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SECRETS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, "hunter2", "stats-bearer-123", "sess-tok-456")


@pytest.fixture(autouse=True)
def _reset():
    yield
    reset_logging()


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def log_secrets() -> None:
    log = structlog.get_logger("controller.test")
    log.info(
        "launching",
        aws_secret_access_key=SECRET_ACCESS_KEY,
        access_key_id=ACCESS_KEY_ID,
        SessionToken="sess-tok-456",
        stats_token="stats-bearer-123",
        nested={"password": "hunter2", "url": "http://admin:hunter2@127.0.0.1/"},
        listed=[f"key {ACCESS_KEY_ID}"],
        instance_id="i-0123456789abcdef0",
        ssh_key="John_Doe_default",
    )
    log.warning(f"env had AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}")
    log.info("header", value=f"Authorization: Bearer stats-bearer-123 for {ACCESS_KEY_ID}")
    try:
        raise RuntimeError(f"signing failed: aws_secret_access_key={SECRET_ACCESS_KEY}")
    except RuntimeError:
        log.exception("call failed")
    logging.getLogger("botocore.credentials").warning("found %s", ACCESS_KEY_ID)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("aws_secret_access_key", True),
        ("secret_key", True),
        ("SecretAccessKey", True),
        ("access_key", True),
        ("access_key_id", True),
        ("AccessKeyId", True),
        ("aws_session_token", True),
        ("x-amz-security-token", True),
        ("token", True),
        ("stats_token", True),
        ("password", True),
        ("private_key", True),
        ("Authorization", True),
        ("credentials", True),
        ("instance_id", False),
        ("ssh_key", False),  # an EC2 key pair's name, shown in the config anyway
        ("key", False),
        ("tag_key", False),
        ("token_file", False),  # where the secret lives, not the secret
        ("ssh_key_file", False),
        ("private_key_path", False),
        ("client_token", False),  # EC2 idempotency token
        ("ClientToken", False),
        ("NextToken", False),
        ("keyboard", False),
        ("monkey", False),
        ("spot_price", False),
    ],
)
def test_secret_key_rule(name, secret):
    assert is_secret_key(name) is secret


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"id {ACCESS_KEY_ID} used", "id *** used"),
        ("temporary ASIAY34FZKBOKMUTVV7A", "temporary ***"),
        (f"aws_secret_access_key={SECRET_ACCESS_KEY} x", "aws_secret_access_key=*** x"),
        (f'"SecretAccessKey": "{SECRET_ACCESS_KEY}"', '"SecretAccessKey": "***"'),
        ("password: hunter2", "password: ***"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
        ("http://user:pw@127.0.0.1/status", "http://user:***@127.0.0.1/status"),
        ("AKIA too short", "AKIA too short"),
        ("instance i-0123456789abcdef0 ready", "instance i-0123456789abcdef0 ready"),
    ],
)
def test_mask_secrets(text, masked):
    assert mask_secrets(text) == masked


def test_json_off_a_terminal_and_no_secret_in_it(capsys):
    configure_logging(verbosity=2)  # capsys's stderr is not a terminal
    log_secrets()
    out, err = capsys.readouterr()
    assert out == ""
    for secret in SECRETS:
        assert secret not in err
    events = json_lines(err)
    assert [e["event"] for e in events][:3] == [
        "launching",
        "env had AWS_SECRET_ACCESS_KEY=***",
        "header",
    ]
    first = events[0]
    assert first["aws_secret_access_key"] == "***"
    assert first["nested"] == {"password": "***", "url": "http://admin:***@127.0.0.1/"}
    assert first["instance_id"] == "i-0123456789abcdef0"  # harmless names stay readable
    assert first["ssh_key"] == "John_Doe_default"
    assert first["level"] == "info"
    assert first["logger"] == "controller.test"
    assert dt.datetime.fromisoformat(first["timestamp"]).tzinfo is not None
    failed = next(e for e in events if e["event"] == "call failed")
    assert "RuntimeError: signing failed: aws_secret_access_key=***" in failed["exception"]
    stdlib = events[-1]
    assert (stdlib["logger"], stdlib["level"], stdlib["event"]) == (
        "botocore.credentials",
        "warning",
        "found ***",
    )


def test_console_renderer_when_asked_and_no_secret_in_it(capsys):
    configure_logging(verbosity=2, json=False)
    log_secrets()
    err = capsys.readouterr().err
    for secret in SECRETS:
        assert secret not in err
    assert "launching" in err
    assert "i-0123456789abcdef0" in err
    assert "Traceback" in err
    with pytest.raises(json.JSONDecodeError):
        json_lines(err)


def test_logfile_is_always_json(capsys, tmp_path):
    logfile = tmp_path / "controller.log"
    configure_logging(verbosity=2, logfile=str(logfile), json=False)
    log_secrets()
    reset_logging()  # closes the file
    assert capsys.readouterr().err == ""
    text = logfile.read_text()
    for secret in SECRETS:
        assert secret not in text
    assert json_lines(text)[0]["event"] == "launching"


def test_logfile_is_reopened_after_logrotate_moved_it(tmp_path):
    logfile = tmp_path / "controller.log"
    configure_logging(verbosity=2, logfile=str(logfile))
    try:
        structlog.get_logger("t").info("before")
        logging.getLogger("botocore").warning("library before")
        logfile.rename(tmp_path / "controller.log.1")  # what logrotate does without copytruncate
        reopen_logfile()  # SIGHUP
        structlog.get_logger("t").info("after")
        logging.getLogger("botocore").warning("library after")
    finally:
        reset_logging()
    rotated = [r["event"] for r in json_lines((tmp_path / "controller.log.1").read_text())]
    fresh = [r["event"] for r in json_lines(logfile.read_text())]
    assert rotated == ["before", "library before"]
    assert fresh == ["after", "library after"]


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        (0, ["error"]),
        (1, ["warning", "error"]),
        (2, ["info", "warning", "error"]),
        (3, ["debug", "info", "warning", "error"]),
    ],
)
def test_verbosity_is_the_seeds(capsys, verbosity, shown):
    configure_logging(verbosity=verbosity, json=True)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    assert [e["level"] for e in json_lines(capsys.readouterr().err)] == shown


def test_libraries_only_from_warning(capsys):
    configure_logging(verbosity=3, json=True)
    for name in ("botocore", "aiohttp.access", "asyncssh"):
        logging.getLogger(name).debug("chatter")
        logging.getLogger(name).info("chatter")
        logging.getLogger(name).warning("trouble")
    events = json_lines(capsys.readouterr().err)
    assert [(e["logger"], e["event"]) for e in events] == [
        ("botocore", "trouble"),
        ("aiohttp.access", "trouble"),
        ("asyncssh", "trouble"),
    ]


def test_reconfiguring_replaces_the_previous_setup(capsys):
    configure_logging(verbosity=2, json=True)
    configure_logging(verbosity=2, json=True)
    logging.getLogger("botocore").warning("once")
    assert len(json_lines(capsys.readouterr().err)) == 1


def test_under_systemd_each_line_leads_with_its_journal_priority(monkeypatch, tmp_path):
    out = (tmp_path / "journal").open("w", encoding="utf-8", buffering=1)
    st = os.fstat(out.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    monkeypatch.setattr(sys, "stderr", out)
    configure_logging(verbosity=3)
    try:
        log = structlog.get_logger("t")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        logging.getLogger("botocore").warning("library")
    finally:
        reset_logging()
        out.close()
    lines = (tmp_path / "journal").read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<4>"]
    assert json.loads(lines[2][3:])["event"] == "w"  # the rest of the line is as before


def test_no_priority_prefix_off_the_journal(monkeypatch, tmp_path):
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")  # some other stream is the journal
    out = (tmp_path / "pipe").open("w", encoding="utf-8", buffering=1)
    monkeypatch.setattr(sys, "stderr", out)
    configure_logging(verbosity=2)
    try:
        structlog.get_logger("t").warning("w")
    finally:
        reset_logging()
        out.close()
    assert json.loads((tmp_path / "pipe").read_text())["event"] == "w"


def test_a_line_that_cannot_be_written_is_dropped_and_counted(monkeypatch):
    import io

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stderr", Gone())
    configure_logging(verbosity=2, json=True)
    log = structlog.get_logger("test")
    log.info("one")
    log.warning("two")
    logging.getLogger("botocore").warning("three")  # the libraries' lines too
    assert dropped_lines() == 3

"""The staging instance's host key (controller.cloud.staging_ssh) against a real OpenSSH sshd: the
keys or fingerprints its console printed are the only ones accepted; with none, the first key is
trusted and returned for pinning; a refused login key fails at once."""

from __future__ import annotations

import asyncssh
import pytest

from controller.cloud.staging import StagingError
from controller.cloud.staging_ssh import connect, run
from tests.harness.sshd import Sshd

OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBFSEc2fgADPqL+qkEegTFjKGX7lwgxhU1X92dez0eRb"


def console_with(keys: list[str] = (), prints: list[str] = ()) -> str:
    text = "Linux version 6.1\n"
    if prints:
        text += "-----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        text += "".join(f"ec2: 256 {p} root@ip-127-0-0-1 (ED25519)\n" for p in prints)
        text += "-----END SSH HOST KEY FINGERPRINTS-----\n"
    if keys:
        text += "-----BEGIN SSH HOST KEY KEYS-----\n"
        text += "".join(f"{k} root@ip-127-0-0-1\n" for k in keys)
        text += "-----END SSH HOST KEY KEYS-----\n"
    return text


async def login(sshd: Sshd, console: str, lines: list[str]) -> str:
    async def read_console() -> str:
        return console

    conn, key = await connect(
        sshd.host,
        sshd.port,
        sshd.username,
        asyncssh.read_private_key(sshd.client_key_path),
        read_console,
        timeout=5,
        progress=lines.append,
    )
    async with conn:
        assert (await run(conn, "echo", "echo staged")).strip() == "staged"
    return key


def host_key(sshd: Sshd) -> str:
    return " ".join(sshd.host_public_key.split()[:2])


def fingerprint(sshd: Sshd) -> str:
    return asyncssh.import_public_key(sshd.host_public_key).get_fingerprint("sha256")


async def test_the_console_keys_are_the_only_ones_accepted(sshd: Sshd):
    lines: list[str] = []
    assert await login(sshd, console_with([OTHER_KEY, host_key(sshd)]), lines) == host_key(sshd)
    assert "verified against its console output" in lines[-1]
    with pytest.raises(StagingError, match="host key other than the ones its console printed"):
        await login(sshd, console_with([OTHER_KEY]), [])


async def test_the_console_fingerprints_are_checked(sshd: Sshd):
    lines: list[str] = []
    assert await login(sshd, console_with(prints=[fingerprint(sshd)]), lines) == host_key(sshd)
    assert "verified against its console fingerprints" in lines[-1]
    with pytest.raises(StagingError, match="not one its console printed"):
        await login(
            sshd, console_with(prints=["SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]), []
        )


async def test_without_console_keys_the_first_key_is_trusted_and_returned(sshd: Sshd):
    lines: list[str] = []
    assert await login(sshd, "no keys here\n", lines) == host_key(sshd)
    assert "trusted on first use" in lines[-1] and fingerprint(sshd) in lines[-1]


async def test_a_refused_key_fails_at_once(sshd: Sshd):
    other = asyncssh.generate_private_key("ssh-ed25519")

    async def console() -> str:
        return ""

    with pytest.raises(StagingError, match="refused the key"):
        await connect(
            sshd.host, sshd.port, sshd.username, other, console, timeout=30, progress=print
        )


@pytest.mark.looptime
async def test_no_ssh_within_the_timeout_names_the_address():
    async def console() -> str:
        return ""

    with pytest.raises(StagingError, match=r"no SSH on 127\.0\.20\.9:1 within 60s"):
        await connect(
            "127.0.20.9",
            1,
            "admin",
            asyncssh.generate_private_key("ssh-ed25519"),
            console,
            timeout=60,
            progress=print,
            retry_delays=(5.0,),
        )

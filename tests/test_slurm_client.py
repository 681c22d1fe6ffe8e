"""controller.slurm.slurm_client's failures, with real processes standing in for Slurm's clients
(through `prefix`): a missing client, a hung one, an error in Slurm's words, a tolerated one."""

from __future__ import annotations

import pytest

from controller.slurm.slurm_client import NODE_GONE, SlurmClient, SlurmError


def client(script: str, **kwargs) -> SlurmClient:
    """A client whose every command runs `script` (sh) instead, with the command as $@."""
    return SlurmClient(prefix=("sh", "-c", script, "sh"), **kwargs)


async def test_missing_client_says_what_to_install(tmp_path):
    with pytest.raises(SlurmError, match="not found; install the Slurm clients") as info:
        await SlurmClient(bin_dir=str(tmp_path)).squeue()
    assert info.value.command == ("squeue", "--json")


async def test_hung_client_is_killed_after_the_timeout():
    with pytest.raises(SlurmError, match=r"no answer within 0\.2s; is slurmctld running"):
        await client("exec sleep 30", timeout=0.2).sinfo()


async def test_failure_quotes_slurm(tmp_path):
    said = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    with pytest.raises(SlurmError, match=r"exited with 1: .*Unable to contact slurm controller"):
        await client(f"echo '{said}' >&2; exit 1").squeue()


async def test_tolerated_failure_returns_what_was_said():
    said = await client(f"echo 'update_node: {NODE_GONE}' >&2; exit 1").drain("n1", "why")
    assert NODE_GONE in said


async def test_arguments_and_slurm_conf_reach_the_client(tmp_path):
    out = await client('echo "$SLURM_CONF" "$@"', slurm_conf="/etc/slurm/x.conf").drain(
        "ip-10-0-1-5", "controller scale-in"
    )
    assert out.split("\n")[0] == (
        "/etc/slurm/x.conf scontrol update nodename=ip-10-0-1-5 state=drain"
        " reason=controller scale-in"
    )

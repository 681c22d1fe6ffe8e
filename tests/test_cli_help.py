"""The command line as an operator meets it: every option explained, every command's --help with
an example and its exit codes, --policy's choices, and shell completion generated from the parser
(checked by bash and zsh themselves)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli import SIMULATE_POLICIES, build_parser, main
from controller.commands.completion import completion_script
from controller.policy.factory import POLICY_NAMES


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def shell(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: apt-get install {name} (scripts/test installs it)")
    return path


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_help_has_an_example_and_the_exit_codes(name, capsys):
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "Example" in out and f"  controller {name}" in out
    assert "Exit status:" in out
    exits = out.split("Exit status:", 1)[1].splitlines()
    assert any(line.startswith("  0 ") for line in exits), out


def test_every_option_and_argument_has_help_text():
    missing = []
    for name, parser in subcommands().items():
        for action in parser._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    top = build_parser()
    assert all(a.help for a in top._actions)


def test_help_has_no_line_a_terminal_would_wrap(capsys):
    for name in subcommands():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        long = [line for line in capsys.readouterr().out.splitlines() if len(line) > 100]
        assert long == [], name


def test_policy_choices_are_the_policies_simulate_knows(capsys):
    assert set(SIMULATE_POLICIES) == {*POLICY_NAMES, "oracle"}
    with pytest.raises(SystemExit) as done:
        main(["simulate", "-c", "c.toml", "--trace", "t.csv", "--policy", "magic"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'magic'" in err and "oracle" in err


def test_completion_subcommand_prints_the_script(capsys):
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == completion_script(build_parser(), "bash")


def test_bash_completion_offers_commands_options_choices_and_files(tmp_path):
    script = tmp_path / "controller.bash"
    script.write_text(completion_script(build_parser(), "bash"))
    (tmp_path / "config.toml").write_text("")

    def complete(*words: str) -> list[str]:
        # what bash does on TAB: COMP_WORDS up to the cursor, then the completion function
        quoted = " ".join(f"'{w}'" for w in ("controller", *words))
        program = (
            f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words)}; "
            'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; '
            "_shtab_controller; printf '%s\\n' \"${COMPREPLY[@]}\""
        )
        done = subprocess.run(
            [shell("bash"), "-c", program],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert "check-config" in complete("che")
    assert set(complete("simulate", "--policy", "")) == set(SIMULATE_POLICIES)
    assert "--dry-run" in complete("teardown", "--d")
    assert "--nagios" in complete("status", "--n")
    assert "config.toml" in complete("check-config", "-c", "con")


def test_zsh_completion_is_valid_zsh(tmp_path):
    script = tmp_path / "_controller"
    script.write_text(completion_script(build_parser(), "zsh"))
    done = subprocess.run(
        [shell("zsh"), "-n", str(script)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert text.startswith("#compdef controller")
    assert "check-config" in text and "--nagios" in text


def test_completion_runs_from_the_installed_command():
    exe = Path(sys.executable).with_name("controller")
    done = subprocess.run(
        [str(exe), "completion", "zsh"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "sync-data" in done.stdout

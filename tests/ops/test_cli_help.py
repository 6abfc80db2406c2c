"""Every option of the operations commands says what it does in --help (issue 20.7)."""

from __future__ import annotations

import argparse

import pytest

COMMANDS = ("bench", "verify", "health", "migrate-consumer", "pull-models", "budget")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from synapse.cli import build_parser

    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help(command: str) -> None:
    parser = _subparsers()[command]
    silent = [
        "/".join(a.option_strings)
        for a in parser._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction) and not a.help
    ]
    assert silent == [], f"synapse {command}: options without help: {silent}"


def test_verify_phase_help_names_the_phases(capsys: pytest.CaptureFixture[str]) -> None:
    from synapse.cli import main

    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    out = capsys.readouterr().out
    for words in ("1 CPU Ollama", "2 vLLM", "3 the gateway", "4 speech", "5 security"):
        assert words in " ".join(out.split()), words

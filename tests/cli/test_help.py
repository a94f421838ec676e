"""Every command's --help shows its options' bracketed defaults.

Typer renders help with rich markup, where ``[auto]`` is a style tag and silently vanishes
unless written ``\\[auto]``.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from finerank.cli import app

UNESCAPED_TAG = re.compile(r"(?<!\\)\[[^\]\n]*\]")


def _commands(group, path: tuple[str, ...] = ()):
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize(
    "command", [c for _, c in COMMANDS], ids=[" ".join(p) or "finerank" for p, _ in COMMANDS]
)
def test_help_texts_escape_rich_markup(command):
    texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
    swallowed = [text for text in texts if UNESCAPED_TAG.search(text)]
    assert not swallowed, f"rich markup would hide these brackets (write \\\\[): {swallowed}"


def test_rendered_help_keeps_the_defaults():
    result = CliRunner().invoke(app, ["rerank", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "cuda [auto]" in result.output and "chunk [truncate]" in result.output

"""The ``finerank`` command line. Each sub-module registers its commands on :data:`app`.

Commands call the Python API / service in-process (never HTTP). Heavy libraries are imported
inside the commands so ``finerank --help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="finerank",
    help="Exact, fast, self-hosted reranking (Qwen3-Reranker and cross-encoders).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines register(app); order is the order in --help.
_COMMAND_MODULES = ("rerank", "serve", "retrieval", "evaluate", "bench", "webui", "batch", "tools")
for _name in _COMMAND_MODULES:
    importlib.import_module(f"finerank.cli.{_name}").register(app)


def main() -> None:
    """Entry point of the ``finerank`` console script."""
    app()

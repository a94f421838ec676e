"""CLI commands (placeholder module: commands are registered here by their owners)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

"""Helpers shared by the command modules."""

from __future__ import annotations

import click


def fail(message: str) -> None:
    """Stop with a one-line error (exit status 1), never a traceback."""
    raise click.ClickException(message)


def parse_devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value

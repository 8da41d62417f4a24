"""Helpers shared by the command modules."""

from __future__ import annotations

import click


def fail(message: str) -> None:
    """Stop with a one-line error (exit status 1), never a traceback."""
    raise click.ClickException(message)


def parse_devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def help_defaults_from(command: click.Command, config_class) -> click.Command:
    """Append each option's default, read from ``config_class`` (a dataclass), to its help.

    The dataclass is the one home of defaults; options pass "not given" (None) and the help text
    still tells the user what they get.
    """
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(config_class) if f.default is not dataclasses.MISSING}
    for param in command.params:
        if isinstance(param, click.Option) and param.name in defaults and defaults[param.name] is not None:
            value = defaults[param.name]
            flag = isinstance(value, bool) and param.secondary_opts
            shown = ("--" if value else "--no-") + param.name if flag else value
            if isinstance(value, bool) and not param.secondary_opts:
                continue
            param.help = f"{param.help or ''} [default: {shown}]".strip()
    return command

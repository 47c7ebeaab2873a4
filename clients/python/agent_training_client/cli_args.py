"""Argument parsing shared by the ``agent-training`` commands: help, defaults, enum values."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

EnumValue = TypeVar("EnumValue", bound=int)

OUTPUT_FORMATS = ("json", "table")


def describe_default(value: object) -> str:
    """A default as help text shows it: ``none``, ``on``, ``off``, or the value."""
    if value is None or value == "" or value == []:
        return "none"
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value).replace("%", "%%")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every flag's default, unless its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default is argparse.SUPPRESS
            or action.required
            or isinstance(action, argparse._SubParsersAction)
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return text
        return f"{text} (default: {describe_default(action.default)})".lstrip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with :class:`HelpFormatter`; its subcommands get it too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_command(
    commands: Any, name: str, text: str, *, output: str | None = "json"
) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` starts with ``text``.

    Args:
        commands: What ``add_subparsers()`` returned.
        name: The command's name.
        text: One line saying what it does.
        output: The command's default ``--output`` (``json`` or ``table``); None: no ``-o`` flag
            (a group of commands, or one that prints no result).
    """
    parser = commands.add_parser(name, help=text, description=text[:1].upper() + text[1:] + ".")
    if output is not None:
        add_output_flag(parser, output)
    return parser


def add_output_flag(parser: argparse.ArgumentParser, default: str) -> None:
    """Add ``-o/--output json|table`` with the command's default (shown in its help)."""
    parser.add_argument(
        "-o",
        "--output",
        type=enum_value,
        choices=OUTPUT_FORMATS,
        default=argparse.SUPPRESS,  # keeps a value given before the command (agent-training -o)
        help=f"json, or a table with aligned columns (default: {default})",
    )
    parser.set_defaults(default_output=default)


def output_format(args: argparse.Namespace) -> str:
    """The output format asked for, or the command's default."""
    return str(getattr(args, "output", None) or getattr(args, "default_output", "json"))


def enum_value(text: str) -> str:
    """An enum value as the choices spell it: ``few-shot`` or ``Few_Shot`` -> ``few_shot``."""
    return text.strip().lower().replace("-", "_")


def enum_list(choices: Iterable[str]) -> Callable[[str], list[str]]:
    """A ``type=`` for comma-separated enum values, each checked against ``choices``."""
    allowed = tuple(choices)

    def parse(text: str) -> list[str]:
        values = [enum_value(item) for item in text.split(",") if item.strip()]
        unknown = [value for value in values if value not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}"
            )
        return values

    return parse


def enum_names(enum: Any, prefix: str) -> tuple[str, ...]:
    """The values of a protobuf enum without its prefix and zero value, in lower case."""
    return tuple(
        name.removeprefix(prefix).lower()
        for name in enum.keys()  # noqa: SIM118 (an EnumTypeWrapper, not a dict)
        if not name.endswith("_UNSPECIFIED")
    )


def enum_number(enum: _EnumTypeWrapper[EnumValue], prefix: str, value: str) -> EnumValue:
    """The number of ``value`` (as parsed by :func:`enum_value`) in a protobuf enum."""
    return enum.Value(prefix + value.upper())

"""Frozen-dataclass configs as command lines: one documented field per flag.

An agent's config is a frozen :func:`dataclasses.dataclass` whose Google-style docstring
documents every field in its ``Attributes:`` section (CleanRL's convention of one documented
field per hyper-parameter). That docstring is the single source of the field docs: Sphinx renders
it, :func:`build_parser` turns it into ``--help`` text, and :func:`config_table` into the Markdown
table of the docs. A field without a doc is an error, so the three cannot drift apart.

A config may inherit fields from a base dataclass (e.g. :class:`agents.runner.RunConfig`, the
run-control fields every agent shares): each class documents the fields it declares, and the
class's own fields are listed before the inherited ones (in ``--help``, in a group of their own).

Field types map to flags as follows: ``int`` / ``float`` / ``str`` take one value (``int`` accepts
``20_000_000``); ``bool`` gives ``--flag`` / ``--no-flag``; ``tuple[int, ...]`` takes one or more
values; a field whose default is ``None`` takes its type's value or the word ``none``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "build_parser",
    "config_from_dict",
    "config_table",
    "config_to_dict",
    "field_docs",
    "flag_name",
    "load_config",
    "parse_config",
    "parse_flags",
    "save_config",
]

ConfigT = TypeVar("ConfigT")

_ATTRIBUTE_LINE = re.compile(r"^(\s*)(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


def _field_groups(config_class: type) -> list[tuple[type, list[str]]]:
    """``(class, field names)``: the config class first, then its dataclass bases, nearest first.

    A field belongs to the most basic class that declares it, so a subclass that only changes an
    inherited field's default leaves it in its base's group.
    """
    classes = [cls for cls in config_class.__mro__ if dataclasses.is_dataclass(cls)]
    home: dict[str, type] = {}
    for f in dataclasses.fields(config_class):
        home[f.name] = [cls for cls in classes if f.name in cls.__dict__.get("__annotations__", {})][-1]
    return [(cls, names) for cls in classes if (names := [n for n, c in home.items() if c is cls])]


def _display_order(config_class: type) -> list[dataclasses.Field]:
    """The fields in the order shown to users: the class's own first, then inherited ones."""
    by_name = {f.name: f for f in dataclasses.fields(config_class)}
    return [by_name[name] for _, names in _field_groups(config_class) for name in names]


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{name: doc}`` of the ``Attributes:`` section of ``cls``'s own docstring."""
    lines = inspect.cleandoc(cls.__dict__.get("__doc__") or "").splitlines()
    docs: dict[str, str] = {}
    inside, entry_indent, current = False, None, None
    for line in lines:
        if not inside:
            inside = line.strip() == "Attributes:"
            continue
        if line.strip() and not line.startswith(" "):  # the next section
            break
        match = _ATTRIBUTE_LINE.match(line)
        indent = len(line) - len(line.lstrip())
        if match and (entry_indent is None or indent == entry_indent):
            entry_indent = indent
            current = match.group(2)
            docs[current] = match.group(3).strip()
        elif current is not None and line.strip():
            docs[current] = f"{docs[current]} {line.strip()}".strip()
    return docs


def field_docs(config_class: type) -> dict[str, str]:
    """The doc of every field, parsed from the ``Attributes:`` section of the class docstring.

    An inherited field is documented by the class that declares it (a subclass may document it
    again to override the text).

    Args:
        config_class: A dataclass whose docstring has a Google-style ``Attributes:`` section.

    Returns:
        ``{field name: one-line doc}`` in display order (the class's own fields, then inherited
        ones; continuation lines joined with spaces).

    Raises:
        TypeError: ``config_class`` is not a dataclass, or a field has no doc.
    """
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"{config_class!r} is not a dataclass")
    docs: dict[str, str] = {}
    for cls in reversed(config_class.__mro__):  # nearest class last: its docs win
        if dataclasses.is_dataclass(cls):
            docs |= {name: doc for name, doc in _attribute_docs(cls).items() if doc}
    names = [f.name for f in _display_order(config_class)]
    missing = [name for name in names if not docs.get(name)]
    if missing:
        raise TypeError(f"{config_class.__name__} fields without a doc in its Attributes section: {missing}")
    return {name: docs[name] for name in names}


def flag_name(field_name: str) -> str:
    """The command-line flag of a field: ``total_steps`` -> ``--total-steps``."""
    return "--" + field_name.replace("_", "-")


def _resolved_types(config_class: type) -> dict[str, Any]:
    return typing.get_type_hints(config_class)


def _optional_inner(annotation: Any) -> Any | None:
    """``X`` for ``X | None`` / ``Optional[X]``, else ``None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0]
    return None


def _parse_scalar(kind: type, optional: bool):
    def parse(text: str):
        if optional and text.lower() == "none":
            return None
        return kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def build_parser(config_class: type, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one flag per field, its help text the field's doc.

    Args:
        config_class: The config dataclass (see the module docstring for the supported types).
        prog: Program name shown in ``--help``.
        description: Text shown above the flags (default: the docstring's first line).

    Returns:
        The parser; its defaults are the dataclass defaults.
    """
    docs = field_docs(config_class)
    hints = _resolved_types(config_class)
    summary = (config_class.__doc__ or "").strip().splitlines()[0] if config_class.__doc__ else None
    parser = argparse.ArgumentParser(
        prog=prog, description=description or summary,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    groups = {}
    for cls, names in _field_groups(config_class)[1:]:  # inherited fields under their class's summary
        title = (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")
        group = parser.add_argument_group(title)
        groups |= dict.fromkeys(names, group)
    for f in _display_order(config_class):
        annotation = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        inner = _optional_inner(annotation)
        kind = inner if inner is not None else annotation
        flag = flag_name(f.name)
        help_text = docs[f.name].replace("%", "%%")
        target = groups.get(f.name, parser)
        if kind is bool:
            target.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) is tuple:
            element = typing.get_args(kind)[0]
            target.add_argument(flag, type=element, nargs="+", default=default, help=help_text,
                                metavar=element.__name__.upper())
        elif kind in (int, float, str):
            target.add_argument(flag, type=_parse_scalar(kind, inner is not None), default=default,
                                help=help_text, metavar=kind.__name__.upper())
        else:
            raise TypeError(f"{config_class.__name__}.{f.name}: unsupported field type {annotation!r}")
    return parser


def parse_config(config_class: type[ConfigT], argv: Sequence[str] | None = None, prog: str | None = None) -> tuple[ConfigT, set[str]]:
    """Parse a command line into a config.

    Args:
        config_class: The config dataclass.
        argv: Arguments (default ``sys.argv[1:]``).
        prog: Program name for ``--help``.

    Returns:
        ``(config, given)``: the validated config and the names of the fields given explicitly
        on the command line (to tell a chosen value from a default, e.g. when resuming).

    Raises:
        SystemExit: Bad flags (argparse's message), or a value the config rejects (its
            ``ValueError`` message, which names the field).
    """
    values, given, parser = parse_flags(config_class, argv, prog=prog)
    try:
        return config_class(**values), given
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def parse_flags(config_class: type, argv: Sequence[str] | None = None,
                prog: str | None = None) -> tuple[dict[str, Any], set[str], argparse.ArgumentParser]:
    """Parse a command line into field values, without building (validating) the config.

    For callers that combine the flags with other values first (e.g. a resumed run's saved
    config) and validate the result.

    Returns:
        ``(values, given, parser)``: ``{field: value}`` of every field (defaults included), the
        names of the fields given explicitly, and the parser (for ``parser.error``).

    Raises:
        SystemExit: Bad flags (argparse's message).
    """
    parser = build_parser(config_class, prog=prog)
    namespace = parser.parse_args(argv)
    given = set(vars(_explicit_parser(parser).parse_args(argv)))
    values = {name: (tuple(v) if isinstance(v, list) else v) for name, v in vars(namespace).items()}
    return values, given, parser


def _explicit_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """A copy of ``parser`` whose defaults are suppressed: it returns only the flags given."""
    explicit = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:  # argparse offers no public copy
        if isinstance(action, argparse._HelpAction):
            continue
        kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
        if isinstance(action, argparse.BooleanOptionalAction):
            explicit.add_argument(*action.option_strings[:1], action=argparse.BooleanOptionalAction, **kwargs)
        else:
            explicit.add_argument(*action.option_strings, type=action.type, nargs=action.nargs, **kwargs)
    return explicit


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as a JSON-ready dict (tuples become lists)."""
    return {f.name: (list(v) if isinstance(v := getattr(config, f.name), tuple) else v)
            for f in dataclasses.fields(config)}


def config_from_dict(config_class: type[ConfigT], values: dict[str, Any]) -> ConfigT:
    """Rebuild a config from :func:`config_to_dict`'s output (unknown keys are an error).

    A field missing from ``values`` takes its value from the class's ``SAVED_DEFAULTS`` mapping
    when it names the field (what a config saved before the field existed meant: e.g. a feature
    its run was trained without), else the field's default.

    Raises:
        TypeError: ``values`` names a field the config does not have.
    """
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"unknown {config_class.__name__} field(s) {unknown}")
    values = {**getattr(config_class, "SAVED_DEFAULTS", {}), **values}
    return config_class(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


def save_config(config: Any, path: str | Path) -> None:
    """Write a config as JSON (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    tmp.replace(path)


def load_config(config_class: type[ConfigT], path: str | Path) -> ConfigT:
    """Read a config written by :func:`save_config`.

    Raises:
        FileNotFoundError: No file at ``path``.
    """
    return config_from_dict(config_class, json.loads(Path(path).read_text()))


def config_table(config_class: type) -> str:
    """The fields as a Markdown table: flag, default, meaning (for the docs), in display order."""
    docs = field_docs(config_class)
    lines = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for f in _display_order(config_class):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        lines.append(f"| `{flag_name(f.name)}` | `{shown}` | {docs[f.name]} |")
    return "\n".join(lines)

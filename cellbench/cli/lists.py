"""The one grammar of list options: ``--folds 1 2 3``, ``--folds 1,2,3``, ``--folds=1,2`` and
``--folds 1 --folds 2`` all mean the same, in every command.

Click gives an option one value per occurrence; a list option is declared ``list[str]``
(repeatable) and its command uses ``list_options("--folds", ...)`` as its class. Before Click
parses, that class rewrites ``--folds 1 2 3`` into ``--folds 1 --folds 2 --folds 3``: the values
of a list option run until the next token starting with ``-`` (``--`` ends the list, as it ends
options). ``split_values`` then splits each value on commas and spaces. A command with
positional arguments therefore takes them before its list options, or after ``--``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from typer.core import TyperCommand

from cellbench.errors import UsageError


def expand_list_options(args: Sequence[str], names: Iterable[str]) -> list[str]:
    """``args`` with each ``NAME v1 v2`` (and ``NAME=v1 v2``) of a list option rewritten as
    ``NAME v1 NAME v2``."""
    names = set(names)
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":  # everything after is positional
            out.extend(args[i:])
            break
        name, eq, inline = token.partition("=")
        i += 1
        if name not in names:
            out.append(token)
            continue
        values = [inline] if eq else []
        while i < len(args) and not args[i].startswith("-"):
            values.append(args[i])
            i += 1
        if not values:
            out.append(token)  # Click says "requires an argument"
        for value in values:
            out += [name, value]
    return out


def list_options(*names: str) -> type[TyperCommand]:
    """A command class whose options ``names`` take space-separated values (see the module)."""

    class ListOptionsCommand(TyperCommand):
        def parse_args(self, ctx, args: list[str]) -> list[str]:
            return super().parse_args(ctx, expand_list_options(args, names))

    ListOptionsCommand.list_option_names = frozenset(names)  # type: ignore[attr-defined]
    return ListOptionsCommand


def split_values(values: Iterable[str] | None) -> list[str]:
    """The items of a list option's values, split on commas and whitespace, in order."""
    return [part for text in values or () for part in text.replace(",", " ").split()]


def parse_folds(values: Iterable[str] | None, option: str = "--folds") -> list[int] | None:
    """Fold numbers (sorted, unique) of a ``--folds`` list; None when not given."""
    items = split_values(values)
    if not items:
        return None
    for part in items:
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"{option}: '{part}' is not a fold number (1, 2, 3, ...)")
    return sorted({int(part) for part in items})

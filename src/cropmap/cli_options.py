"""Command-line options generated from the config dataclasses (:mod:`cropmap.config`): one option per field,
named after it (``batch_size`` -> ``--batch-size``), typed by its annotation, documented by its comment, so
that a field added to a config reaches ``--help``, ``--config`` and ``--print-config`` with no other edit.

Fields of a nested config (``TrainConfig.model``) are options of their own (``--hidden``), except a nested
``name``, which takes the parent's name (``model.name`` -> ``--model``); dict fields are YAML-only. All
defaults are None in argparse, so that an option left out keeps the value of the ``--config`` file, then
the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .configfile import field_comments

DEST_PREFIX = "config:"


@dataclass(frozen=True)
class ConfigOption:
    config: type  # the top-level config class
    path: tuple[str, ...]  # field path from it, e.g. ("model", "hidden")
    flag: str  # option name without dashes
    hint: Any  # the field's type
    default: Any
    help: str

    @property
    def dest(self) -> str:
        return f"{DEST_PREFIX}{self.config.__name__}:{'.'.join(self.path)}"


def config_options(cls: type, top: type | None = None, prefix: tuple[str, ...] = ()) -> list[ConfigOption]:
    """Every option of ``cls`` (nested configs flattened), in field order."""
    top = top or cls
    hints, docs, out = get_type_hints(cls), field_comments(cls), []
    defaults = cls()
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            out += config_options(type(default), top, prefix + (f.name,))
            continue
        hint = hints[f.name]
        if _strip_none(hint) is dict or get_origin(_strip_none(hint)) is dict:
            continue  # a mapping of free keys: YAML only
        flag = prefix[-1] if prefix and f.name == "name" else f.name
        out.append(ConfigOption(top, prefix + (f.name,), flag.replace("_", "-"), hint, default, docs.get(f.name, "")))
    return out


def add_config_options(parser: argparse.ArgumentParser, cls: type, aliases: dict[str, tuple[str, ...]] | None = None,
                       extra: dict[str, dict] | None = None) -> list[ConfigOption]:
    """Add ``cls``'s options to ``parser``; ``aliases`` gives older names of an option (``{"period-days":
    ("--period",)}``), ``extra`` more argparse keywords (a metavar)."""
    aliases, extra = aliases or {}, extra or {}
    options = config_options(cls)
    required = set(getattr(cls, "REQUIRED", ()))
    for o in options:
        kwargs = _argparse_kwargs(o)
        shown = "" if o.default is None or isinstance(o.default, bool) or o.path[-1] in required else \
            f" (default {_show(o.default)})"
        text = (o.help + shown + (" (required)" if o.path[-1] in required else "")).strip()
        kwargs["help"] = text.replace("%", "%%") or None  # argparse formats help with %
        kwargs.update(extra.get(o.flag, {}))
        parser.add_argument(f"--{o.flag}", *aliases.get(o.flag, ()), dest=o.dest, default=None, **kwargs)
    return options


def overrides_from(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options given on the command line for ``cls``, as the nested mapping ``config_from`` takes."""
    out: dict[str, Any] = {}
    head = f"{DEST_PREFIX}{cls.__name__}:"
    for dest, value in vars(args).items():
        if not dest.startswith(head) or value is None:
            continue
        *parents, name = dest[len(head):].split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = tuple(value) if isinstance(value, list) else value
    return out


def given(args: argparse.Namespace, cls: type, field: str) -> Any:
    """The value of ``cls``'s ``field`` option on the command line (None when not given)."""
    return getattr(args, f"{DEST_PREFIX}{cls.__name__}:{field}", None)


def _argparse_kwargs(o: ConfigOption) -> dict[str, Any]:
    hint = _strip_none(o.hint)
    metavar = o.flag.upper().replace("-", "_")
    if get_origin(hint) is Literal:
        values = get_args(hint)
        return dict(choices=list(values), type=type(values[0]))
    if hint is bool:
        return dict(action=argparse.BooleanOptionalAction)
    if get_origin(hint) is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return dict(nargs="+", type=_scalar(args[0]), metavar=metavar)
        return dict(nargs=len(args), type=_scalar(args[0]), metavar=metavar)
    return dict(type=_scalar(hint), metavar=metavar)


def _scalar(hint: Any):
    if hint in (int, float, str):
        return hint
    members = get_args(hint)
    if _is_union(hint) and members:  # e.g. devices: int | str, deterministic: bool | str
        def parse(text: str, members=members):
            for m in members:
                if m is bool and text.lower() in ("true", "false"):
                    return text.lower() == "true"
                if m in (int, float):
                    try:
                        return m(text)
                    except ValueError:
                        continue
                if m is str:
                    return text
            raise argparse.ArgumentTypeError(f"{text!r}: expected {' or '.join(t.__name__ for t in members)}")

        parse.__name__ = " or ".join(t.__name__ for t in members)
        return parse
    raise TypeError(f"no command-line form for a field of type {hint!r}")


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType)


def _strip_none(hint: Any) -> Any:
    """``X | None`` -> ``X``; other types unchanged."""
    if _is_union(hint):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
        if len(rest) < len(get_args(hint)):
            return typing.Union[tuple(rest)]
    return hint


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)

"""A config as a YAML file with a comment per field, taken from the comments in ``config.py``, so that
users start from a documented file and a run's ``config.yaml`` explains itself."""

from __future__ import annotations

import dataclasses
import inspect
import io
import tokenize
from functools import cache
from typing import Any

import yaml


@cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}`` from a dataclass's source: the comment ending the field's line, else the
    comment lines right above it."""
    src = inspect.getsource(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[int, str] = {}
    fields_at: dict[int, str] = {}
    tokens = list(tokenize.generate_tokens(io.StringIO(src).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif (tok.type == tokenize.NAME and tok.string in names and i + 1 < len(tokens)
              and tokens[i + 1].string == ":" and tokens[i - 1].type in (tokenize.INDENT, tokenize.NEWLINE,
                                                                         tokenize.NL, tokenize.DEDENT)):
            fields_at[tok.start[0]] = tok.string
    lines = src.splitlines()
    out = {}
    for line, name in fields_at.items():
        if line in comments:
            out[name] = comments[line]
            continue
        above, j = [], line - 1
        while j in comments and lines[j - 1].lstrip().startswith("#"):
            above.insert(0, comments[j])
            j -= 1
        if above:
            out[name] = " ".join(above)
    return out


def config_yaml(config: Any, header: str = "") -> str:
    """The YAML of a (nested) config dataclass, each field followed by its comment; ``load_config`` reads it back."""
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    _emit(config, lines, "")
    return "\n".join(lines) + "\n"


def _emit(config: Any, lines: list[str], indent: str) -> None:
    docs = field_comments(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        comment = f"  # {docs[f.name]}" if f.name in docs else ""
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:{comment}")
            _emit(value, lines, indent + "  ")
            continue
        lines.append(f"{indent}{f.name}: {_flow(value)}{comment}")


def _flow(value: Any) -> str:
    """One value on one line, in YAML flow style."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, allow_unicode=True, width=10_000)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML's safe dumper knows no tuples)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value

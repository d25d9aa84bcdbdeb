"""``perfusion COMMAND --help``: usage, what the command does, and every key with its default.

Generated, never hand-written: the usage line and the text come from the command module's
docstring (its first line is ``\\`\\`perfusion ...\\`\\`: summary``), the keys from its
:class:`Options` (the config dataclasses and YAML files the command itself loads, so a default
shown is the default used), and each key's line from the field's docstring in its dataclass
(read with ``ast``, as nerfstudio documents its config fields). The same usage line ends the
refusal of a command line without its one path or its ``out=`` (:func:`one_positional`).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from perfusion.config import config_dir, load_config, split_args
from perfusion.errors import PerfusionError

KEY_COLUMN = 34
"""Width of the ``key=default`` column; longer entries push their description right."""
LINE_CHARS = 110
"""A key line longer than this has its description cut at a word boundary with ``...``."""
MIN_DESCRIPTION_CHARS = 40


@dataclass(frozen=True)
class Options:
    """The ``key=value`` options of one command: what :func:`load_config` gets, for run and help.

    Attributes:
        schema: the config dataclass, or a function returning it, so that a schema whose package
            imports torch is imported only when the command has passed its cheap checks.
        yamls: YAML files under :func:`~perfusion.config.config_dir` merged onto the schema.
        nested: ``{key: yaml}`` merged under ``key`` first (see :func:`load_config`).
        own: a torch-free dataclass of keys the command takes itself (``fit``'s ``out``).
        aliases: shorthand keys and the full keys they stand for (``input`` -> ``inputs``).
    """

    schema: type | Callable[[], type] | None = None
    yamls: Sequence[str] = ()
    nested: dict[str, str] = field(default_factory=dict)
    own: type | None = None
    aliases: dict[str, str] = field(default_factory=dict)

    def split(self, overrides: Sequence[str]) -> tuple[list[str], list[str]]:
        """``overrides`` split into those of :attr:`own` and the rest (for :attr:`schema`)."""
        names = {f.name for f in fields(self.own)} if self.own else set()
        mine = [o for o in overrides if o.split("=", 1)[0].split(".")[0] in names]
        return mine, [o for o in overrides if o not in mine]

    def schema_class(self) -> type:
        """The config dataclass (importing its module when :attr:`schema` is a function)."""
        assert self.schema is not None, "a command without a schema has no config to load"
        return self.schema if isinstance(self.schema, type) else self.schema()

    def load(self, overrides: Sequence[str] = ()) -> Any:
        """The schema's config: YAML files, then ``overrides`` (aliases expanded)."""
        return load_config(
            self.schema_class(),
            [config_dir() / y for y in self.yamls],
            expand_aliases(overrides, self.aliases),
            {key: config_dir() / y for key, y in self.nested.items()},
        )

    def parse(self, doc: str | None, argv: Sequence[str]) -> tuple[Path, Any]:
        """The absolute path and the config of a command line of one path and ``key=value``
        options (a bad key is named first), refused as :func:`one_positional` refuses; a config
        with an ``out`` key must have it set."""
        paths, overrides = split_args(argv)
        cfg = self.load(overrides)
        path = one_positional(doc, paths, cfg if hasattr(cfg, "out") else None)
        return Path(path).absolute(), cfg


def expand_aliases(overrides: Sequence[str], aliases: dict[str, str]) -> list[str]:
    """``["input=x"]`` with ``{"input": "inputs"}`` -> ``["inputs=x"]``; other items unchanged."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        out.append(f"{aliases.get(key, key)}{sep}{value}")
    return out


def one_positional(doc: str | None, positionals: Sequence[str], cfg: Any = None) -> str:
    """The one positional word of a command, refused when there are none or several, or when the
    config ``cfg`` of a command that writes has an empty ``out``: the refusal names the word
    (``CASE_DIR``) and ends with the usage line of the command's module docstring ``doc``."""
    usage = _docstring_parts(doc or "", "")[0]
    words = usage.split()
    if len(positionals) != 1:
        raise PerfusionError(f"expected one {words[2]}, got {len(positionals)}. usage: {usage}")
    if cfg is not None and not cfg.out:
        out = next(w for w in words if w.startswith("out="))
        raise PerfusionError(f"missing {out}. usage: {usage}")
    return positionals[0]


def command_help(name: str, module: ModuleType, summary: str) -> str:
    """The ``--help`` text of command ``name`` implemented by ``module``."""
    usage, text = _docstring_parts(module.__doc__ or "", summary)
    lines = [f"usage: {usage}", "", *_wrap(text), ""]
    options: Options | None = getattr(module, "OPTIONS", None)
    if options is None:
        return "\n".join([*lines, "keys: none"])
    sources = ", ".join(f"configs/{y}" for y in options.yamls)
    lines.append(
        f"keys (key=value; defaults from {sources}; config=NAME adds a YAML):"
        if sources
        else "keys (key=value):"
    )
    if options.own is not None:
        lines += _key_lines(OmegaConf.structured(options.own), "")
    if options.schema is not None:
        lines += _key_lines(options.load(), "")
    if options.aliases:
        short = ", ".join(f"{k}= for {v}=" for k, v in options.aliases.items())
        lines += ["", f"shorthands: {short}"]
    return "\n".join(lines)


def _docstring_parts(doc: str, summary: str) -> tuple[str, str]:
    """(usage, description) from a command docstring whose first line is ````perfusion ...````."""
    first, _, rest = inspect.cleandoc(doc).partition("\n")
    match = re.match(r"``(perfusion [^`]*)``[:.]?\s*(.*)", first)
    if match is None:
        return "perfusion ...", plain(doc)
    head, rest = match.group(2).strip(), rest.strip()
    text = "\n\n".join(part for part in (head, rest) if part) or summary
    return match.group(1), plain(text)


def plain(text: str) -> str:
    """reStructuredText markup to plain text: ````x```` -> x, ``:class:`~a.B``` -> B."""
    text = re.sub(r":\w+:`~([^`]*)`", lambda m: m.group(1).split(".")[-1], text)
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text)
    return text.replace("``", "")


def _wrap(text: str) -> list[str]:
    paragraphs = re.split(r"\n\s*\n", text)
    out: list[str] = []
    for paragraph in paragraphs:
        out += textwrap.wrap(" ".join(paragraph.split()), 100) + [""]
    return out[:-1]


def _key_lines(cfg: DictConfig, prefix: str) -> list[str]:
    """One line per leaf key of ``cfg``; a nested group gets a header and its own lines."""
    docs = field_docs(OmegaConf.get_type(cfg))
    values = OmegaConf.to_container(cfg, resolve=True)
    leaves, groups = [], []
    for key, value in values.items():
        node = cfg[key]
        if isinstance(node, DictConfig) and is_dataclass(OmegaConf.get_type(node)):
            groups.append(key)
        else:
            leaves.append(_key_line(f"{prefix}{key}", value, docs.get(key, "")))
    for key in groups:
        group = cfg[key]
        header = one_line(docs.get(key) or (OmegaConf.get_type(group).__doc__ or ""))
        leaves += ["", f"  {prefix}{key}.*: {header}".rstrip(": ")]
        leaves += _key_lines(group, f"{prefix}{key}.")
    return leaves


def _key_line(key: str, value: Any, doc: str) -> str:
    entry = f"  {key}={format_value(value)}"
    entry = f"{entry:<{KEY_COLUMN}}  " if len(entry) < KEY_COLUMN else f"{entry}  "
    text = one_line(doc, max(MIN_DESCRIPTION_CHARS, LINE_CHARS - len(entry)))
    return f"{entry}{text}".rstrip()


def format_value(value: Any) -> str:
    """A default as it would be typed on the command line (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value else "''"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def one_line(doc: str, chars: int = LINE_CHARS) -> str:
    """The first sentence of a docstring, markup removed, cut to ``chars`` characters.

    A sentence ends at ``.``, ``!`` or ``?`` before a capital letter or the end, so that
    ``Eq. (1)`` and ``e.g. x`` do not end it.
    """
    text = " ".join(plain(doc).split())
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z]|$)", text)
    text = match.group(1) if match else text
    if len(text) > chars:
        text = text[: chars - 4].rsplit(" ", 1)[0] + " ..."
    return text


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass and its bases: the string literal after each field."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # no source (e.g. built in a REPL): no descriptions
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = after.value.value
    return docs

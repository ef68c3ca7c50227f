"""The configuration tables of docs/serving.md, generated from the pydantic models of :mod:`serving.config`.

``python -m serving.config_table`` prints them; ``python -m serving.config_table --write docs/serving.md``
replaces the text between ``<!-- config-table:start -->`` and ``<!-- config-table:end -->``. A test
(``tests/test_serving_config_table.py``) fails when the manual and the models differ, so every accepted
field is documented with its type, default and description.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from serving.config import (
    ForecastConfig,
    MeterConfig,
    PricesConfig,
    ServingConfig,
    StationConfig,
    TimeOfUsePeriod,
    TLSConfig,
)

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
MODELS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("top level", ServingConfig),
    ("`stations[]`", StationConfig),
    ("`meter`", MeterConfig),
    ("`forecast`", ForecastConfig),
    ("`prices`", PricesConfig),
    ("`prices.time_of_use[]`", TimeOfUsePeriod),
    ("`tls`", TLSConfig),
)


def type_name(annotation: object) -> str:
    """A short readable name of a field's type (``float``, ``Path | None``, ``'station' | 'http'``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def default_text(model: type[BaseModel], name: str) -> str:
    field = model.model_fields[name]
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return f"`{type(value).__name__}()`"
    if isinstance(value, dict | tuple | list) and not value:
        return "empty"
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def model_table(title: str, model: type[BaseModel]) -> str:
    """One markdown table: field, type, default, description."""
    rows = [
        f"**{title}** ({model.__name__})",
        "",
        "| field | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        key = field.alias or name
        doc = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name(field.annotation)} | {default_text(model, name)} | {doc} |")
    return "\n".join(rows)


def config_tables() -> str:
    """Every table of :data:`MODELS`, separated by blank lines."""
    return "\n\n".join(model_table(title, model) for title, model in MODELS)


def replace_block(text: str, tables: str) -> str:
    """``text`` with the generated block between :data:`START` and :data:`END` replaced by ``tables``."""
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {START} ... {END} block")
    return pattern.sub(lambda _: f"{START}\n{tables}\n{END}", text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, help="update the generated block of this markdown file")
    args = p.parse_args(argv)
    tables = config_tables()
    if args.write is None:
        print(tables)
        return
    args.write.write_text(replace_block(args.write.read_text(), tables))


if __name__ == "__main__":
    main()

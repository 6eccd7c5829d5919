"""A job spec's fields, read off its pydantic model: ``aikd <job> --help`` lists them and
``aikd spec <job>`` prints a complete commented spec to start from.

Nothing here is written twice: names, types, defaults and the one-line descriptions
are the spec models' own (``Field(description=...)``). Nested models are walked with
dotted names (``data.image_size``), the keys ``--set`` takes; a list of models shows
its items' fields under ``name.N`` (``models.0.model``).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined, to_jsonable_python

REQUIRED = "REQUIRED"  # a field the spec must set: it has no default


@dataclass(frozen=True)
class SpecField:
    name: str  # dotted, as --set takes it
    type: str
    default: Any  # REQUIRED where the spec must set it
    description: str
    model: type[BaseModel] | None  # the nested model its value is, if any
    many: bool  # a list of such models


def spec_fields(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None) -> list[SpecField]:
    """Every field of ``model``, nested ones after their parent; ``defaults`` is the instance the parent's
    default gives (a nested field's default can differ from its class's: score's ``resources``)."""
    rows = []
    for name, info in _ordered(model):
        default = _default(info, defaults, name)
        nested, many = _nested_model(info.annotation)
        rows.append(SpecField(prefix + name, type_name(info.annotation), default, info.description or "", nested, many))
        if nested is not None:
            inner = default if isinstance(default, BaseModel) else None
            rows += spec_fields(nested, f"{prefix}{name}.{'0.' if many else ''}", inner)
    return rows


def _ordered(model: type[BaseModel]) -> list[tuple[str, Any]]:
    """A model's own fields first, then those it inherits (every job's resources and tracking last)."""
    own = model.__dict__.get("__annotations__", {})
    fields = list(model.model_fields.items())
    return [f for f in fields if f[0] in own] + [f for f in fields if f[0] not in own]


def _default(info, defaults: BaseModel | None, name: str) -> Any:
    if defaults is not None:
        return getattr(defaults, name)
    if info.is_required():
        return REQUIRED
    value = info.get_default(call_default_factory=True)
    return REQUIRED if value is PydanticUndefined else value


def _nested_model(annotation) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (alone, optional, or as list items), and whether it is a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args:
        inner, _ = _nested_model(args[0])
        return inner, inner is not None
    if origin in (typing.Union, types.UnionType):
        models = [m for m, _ in map(_nested_model, args) if m is not None]
        return (models[0], False) if len(models) == 1 else (None, False)
    if origin is typing.Annotated:
        return _nested_model(args[0])
    return None, False


def type_name(annotation) -> str:
    """A type as a user writes its values: ``int``, ``list[str]``, ``'pack' | 'spread'``, ``float | None``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    return getattr(annotation, "__name__", str(annotation))


def _value(value: Any) -> str:
    """A default as YAML on one line."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = yaml.safe_dump(to_jsonable_python(value), default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def fields_help(model: type[BaseModel]) -> str:
    """The fields as help text: name, type, default, one line each."""
    rows = spec_fields(model)
    width = max(len(r.name) for r in rows)
    lines = ["spec fields (nested ones dotted, as --set takes them; a list's items as NAME.0.FIELD):"]
    for r in rows:
        if r.model is not None and not r.many and (isinstance(r.default, BaseModel) or r.default is REQUIRED):
            default = "required, fields below" if r.default is REQUIRED else "fields below"
        else:
            default = "required" if r.default is REQUIRED else _value(r.default)
        what = f"  {r.description}" if r.description else ""
        lines.append(f"  {r.name:<{width}}  {r.type} = {default}{what}")
    return "\n".join(lines)


def commented_spec(kind: str, model: type[BaseModel], title: str) -> str:
    """A whole spec of ``kind`` as YAML: every field at its default with its description as a comment;
    fields without one read ``null  # REQUIRED``; optional sections left out are shown commented out."""
    lines = [f"# aikd {kind}: {title}",
             "# Every field at its default; set the ones marked REQUIRED. Run it with: aikd run <this file>",
             f"job: {kind}"]
    _emit(model, None, 0, lines, commented=False)
    return "\n".join(lines) + "\n"


def _emit(model: type[BaseModel], defaults: BaseModel | None, depth: int, lines: list[str], commented: bool) -> None:
    pad = "  " * depth
    lead = "# " if commented else ""
    for info_name, info in _ordered(model):
        default = _default(info, defaults, info_name)
        nested, many = _nested_model(info.annotation)
        note = info.description or ""
        if nested is not None and many:
            lines.append(f"{lead}{pad}{info_name}:{_comment(_required(default, note))}")
            _emit_item(nested, depth + 1, lines, commented)
        elif nested is not None and (isinstance(default, BaseModel) or default is REQUIRED):
            lines.append(f"{lead}{pad}{info_name}:{_comment(_required(default, note))}")
            _emit(nested, default if isinstance(default, BaseModel) else None, depth + 1, lines, commented)
        elif nested is not None and default is None and not commented:  # an optional section, off by default
            lines.append(f"{pad}{info_name}: null{_comment(note + ' (unset; its fields below, commented out)')}")
            lines.append(f"# {pad}{info_name}:")
            _emit(nested, None, depth + 1, lines, commented=True)
        else:
            value = "null" if default is REQUIRED else _value(default)
            lines.append(f"{lead}{pad}{info_name}: {value}{_comment(_required(default, note))}")


def _emit_item(model: type[BaseModel], depth: int, lines: list[str], commented: bool) -> None:
    """One list item's fields, the first on the item's dash line (``- name: ...``)."""
    lead = "# " if commented else ""
    item: list[str] = []
    _emit(model, None, depth + 1, item, commented)
    item[0] = item[0].replace(lead + "  " * (depth + 1), lead + "  " * depth + "- ", 1)
    lines += item


def _required(default: Any, note: str) -> str:
    return f"{REQUIRED}: {note}" if default is REQUIRED and note else REQUIRED if default is REQUIRED else note


def _comment(note: str) -> str:
    return f"  # {note}" if note else ""


def job_spec(kind: str) -> type[BaseModel]:
    """The spec model of a job kind, found among the config package's models (light: no job module is
    imported, so `--help` stays fast)."""
    from aikd.config import JobSpec

    def every(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from every(sub)

    return next(cls for cls in every(JobSpec) if cls.kind == kind)

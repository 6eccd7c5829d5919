"""Job specs as data: reading YAML, ``--set`` overrides, validation, and errors that name the field.

The ground floor of every job's configuration: it imports nothing of aikd but its errors
(and the storage layer, lazily, to read a spec from any URI), so config models, registries
and jobs all build on it without import circles. Unknown keys are rejected and every
error names the field, so a typo in a job spec is a one-line message instead of a
silently new key.
"""


from __future__ import annotations

import difflib
import re
import types
import typing
import warnings
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from aikd.errors import ConfigError

# A spec's `register:` field has the name of ABCMeta.register, which pydantic's models
# inherit and aikd never calls: pydantic's warning about the shadowing says nothing useful.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


def load_spec(uri: str, model: type[BaseModel], overrides: dict | None = None) -> BaseModel:
    """Read a YAML job spec from any URI and validate it; errors name the field and the file."""
    data, source = read_spec(uri)
    data.pop("job", None)  # the job kind, read by `aikd run`
    return validate(model, with_overrides(data, overrides or {}), source=source)


def read_spec(uri: str) -> tuple[dict, str]:
    """A spec file's mapping of fields and its URI; plain YAML data only (``safe_load``: no Python tags)."""
    import yaml

    from aikd.storage import resolve

    location = resolve(uri)
    if not location.exists():
        raise ConfigError(f"job spec not found: {location.uri}")
    try:
        data = yaml.safe_load(location.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{location.uri}: not a YAML job spec (not UTF-8 text)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{location.uri}: not valid YAML: {yaml_problem(err)}") from None
    except OSError as err:  # a folder, an unreadable file
        raise ConfigError(f"{location.uri}: cannot read the job spec ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{location.uri}: a job spec is a mapping of fields, got {type(data).__name__}")
    return data, location.uri


def yaml_problem(err: Exception) -> str:
    """A YAML error in one line: what and where (PyYAML's own text spans lines, with a caret)."""
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if "python/" in problem:  # !!python/object/apply:os.system and kin: safe_load builds no objects
        problem += ": a spec is plain data, YAML tags that build Python objects are refused"
    return problem + where


def parse_overrides(pairs: list[str] | None) -> dict:
    """``--set key=value`` arguments as ``{dotted.key: value}``, each value read as YAML (``3``, ``[a, b]``)."""
    import yaml

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value (dotted keys allowed), got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key}: not a valid YAML value: {yaml_problem(err)}") from None
    return out


def with_overrides(data: dict, overrides: dict) -> dict:
    """A copy of ``data`` with each ``dotted.key: value`` of ``overrides`` set (sections made as needed).

    A part that is a number indexes a list (``models.0.model``): the item must exist.
    """
    import copy

    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = _child(node, key, dotted)
        if isinstance(node, list):
            node[_index(node, leaf, dotted)] = value
        else:
            node[leaf] = value
    return out


def _child(node, key: str, dotted: str):
    if isinstance(node, list):
        return node[_index(node, key, dotted)]
    if not isinstance(node.get(key, {}), (dict, list)):
        raise ConfigError(f"cannot set {dotted}: {key} is a value, not a section")
    return node.setdefault(key, {})


def _index(items: list, key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"cannot set {dotted}: {key!r} is not an index of a list of {len(items)} items")
    return int(key)


def validate(model: type[BaseModel], data: dict, source: str = "spec") -> BaseModel:
    """``model.model_validate`` whose failure is one :class:`ConfigError` line naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid {model.__name__}: " + error_text(model, err)) from None


def error_text(model: type[BaseModel], err: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as ``dotted.field: message`` parts of one line.

    A union's member tags (``base.str``, ``base.dict[any,any]``) are left out of the
    path and its messages joined; an unknown field says which field was meant, or
    lists the fields there.
    """
    by_field: dict[str, list[str]] = {}
    for e in err.errors():
        where, container = _field_path(model, e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and container is not None:
            message += _field_hint(str(e["loc"][-1]), container)
        by_field.setdefault(".".join(p for p in (prefix, where) if p), []).append(message)
    parts = []
    for where, messages in by_field.items():
        messages = list(dict.fromkeys(messages))
        if len(messages) > 1 and all(m.startswith("Input should be ") for m in messages):
            messages = [" or ".join([messages[0]] + [m.removeprefix("Input should be ") for m in messages[1:]])]
        message = "; ".join(messages)
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (alone, or inside Optional, a union, a list or a dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _is_union(annotation) -> bool:
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) > 1


def _field_path(model: type[BaseModel], loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """The dotted path of an error's location, and the model that holds its last part (None: not a model)."""
    parts: list[str] = []
    current: type[BaseModel] | None = model
    holder: type[BaseModel] | None = model
    union = False
    for part in loc:
        holder = current
        fields = current.model_fields if current is not None else {}
        if isinstance(part, str) and part in fields:
            annotation = fields[part].annotation
            found = _models_in(annotation)
            current, union = (found[0] if len(found) == 1 else None), _is_union(annotation)
            parts.append(part)
        elif union and isinstance(part, str):  # a union member's tag, e.g. 'str' or 'dict[any,any]'
            union = False
        else:  # a list index or a mapping key: the model of the items stays current
            parts.append(str(part))
    return ".".join(parts), holder


def _field_hint(name: str, model: type[BaseModel]) -> str:
    fields = sorted(model.model_fields)
    close = difflib.get_close_matches(name, fields, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid fields: {', '.join(fields)}"


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, recursively for mappings (lists and values of ``top`` replace)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def distinct(values: list[str], what: str, why: str) -> None:
    """Refuse repeated values in a list where each must name one thing."""
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct ({why}), got {values}")


PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
PLAIN_NAME_FORM = "a plain name (letters, digits, . _ -, not starting with '.')"


def plain_name(value: str) -> str:
    """A name that becomes a directory, file or column name: no '/', no '..', nothing hidden."""
    if not PLAIN_NAME.fullmatch(value):
        raise ValueError(f"must be {PLAIN_NAME_FORM}, got {value!r}")
    return value


PlainName = Annotated[str, AfterValidator(plain_name)]


class Frozen(BaseModel):
    """Immutable, unknown keys refused; fields a spec may still carry under an old name say their new one."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, data):
        if isinstance(data, dict):
            for old, new in cls.renamed.items():
                if old in data:
                    raise ValueError(f"field {old!r} was renamed: set {new}")
        return data

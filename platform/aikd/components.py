"""What the registries hold (``aikd components``): every backbone, margin head, teacher and face detector
with its metadata.

Read from the registries' metadata and the entrypoints' signatures; nothing is built, so a teacher
that needs a model file is listed without one. A student is any backbone plus the quality head
(``aikd.models.student``), so it has no registry of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from tabulate import tabulate

from aikd.detect.base import detector_class, list_detectors
from aikd.errors import ComponentError
from aikd.models.heads import head_class, list_heads
from aikd.models.registry import list_models, model_entrypoint, model_info
from aikd.teachers.base import list_teachers, teacher_class

KINDS = ("backbones", "heads", "teachers", "detectors")


def describe_components(kinds: Sequence[str] = KINDS) -> dict[str, list[dict]]:
    """``{kind: [row, ...]}``, one JSON-able row per registered entry, in name order."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ComponentError(f"unknown component kind {unknown[0]!r}; valid: {', '.join(KINDS)}")
    rows = {"backbones": lambda: [backbone_row(n) for n in list_models()],
            "heads": lambda: [head_row(n) for n in list_heads()],
            "teachers": lambda: [teacher_row(n) for n in list_teachers()],
            "detectors": lambda: [detector_row(n) for n in list_detectors()]}
    return {kind: rows[kind]() for kind in kinds}


def render_components(components: dict[str, list[dict]] | None = None) -> str:
    """``describe_components()`` (or what it returned) as one readable text table per kind."""
    components = describe_components() if components is None else components
    return "\n\n".join(f"{kind}\n{tabulate([_cells(r) for r in rows], headers='keys', tablefmt='simple')}"
                       for kind, rows in components.items())


def backbone_row(name: str) -> dict:
    info = model_info(name)
    options, required = call_options(model_entrypoint(name))
    return {"name": name, "description": info.description, "input_size": info.input_size,
            "embedding_dim": info.embedding_dim, "mean": list(info.mean), "std": list(info.std),
            "options": options, "required": required}


def head_row(name: str) -> dict:
    cls = head_class(name)
    # embedding_dim and num_classes come from the backbone and the data, not from a spec
    options, required = call_options(cls, skip=("embedding_dim", "num_classes"))
    return {"name": name, "description": _first_line(cls), "options": options, "required": required}


def teacher_row(name: str) -> dict:
    cls = teacher_class(name)
    options, required = call_options(cls)
    return {"name": name, "description": _first_line(cls), "higher_is_better": cls.higher_is_better,
            "needs_images": cls.needs_images, "input_size": cls.input_size, "options": options,
            "required": required, "one_of": list(cls.one_of)}


def detector_row(name: str) -> dict:
    cls = detector_class(name)
    options, required = call_options(cls)
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}  # as JSON reads them back
    return {"name": name, "description": _first_line(cls), "options": options, "required": required}


def call_options(fn: Callable, skip: Sequence[str] = ()) -> tuple[dict[str, object], list[str]]:
    """The keyword options of a function or class and their defaults, and those with no default.

    A class's ``__init__`` that forwards ``**kwargs`` adds its bases' options (the FR teachers' device).
    """
    options: dict[str, object] = {}
    required: list[str] = []
    for params in _signatures(fn):
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in skip or p.name in options or p.name in required:
                continue
            if p.default is p.empty:
                required.append(p.name)
            else:
                options[p.name] = p.default
    return options, required


def _signatures(fn: Callable):
    if not isinstance(fn, type):
        yield list(inspect.signature(fn).parameters.values())
        return
    for klass in fn.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # drop self
        yield params
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return


def _first_line(cls: type) -> str:
    return (cls.__doc__ or "").strip().split("\n")[0]


def _cells(row: dict) -> dict:
    """A row for a text table: options as ``k=v``; a teacher's size says where it comes from."""
    cells = {k: v for k, v in row.items() if k not in ("options", "required", "one_of", "mean", "std")}
    if "mean" in row:
        cells["mean/std"] = f"{_floats(row['mean'])} / {_floats(row['std'])}"
    if "needs_images" in row and row["input_size"] is None:
        cells["input_size"] = "its model's card" if row["needs_images"] else "-"
    one_of = [" | ".join(row["one_of"]) + " (one required)"] if row.get("one_of") else []
    cells["options"] = ", ".join([f"{k} (required)" for k in row["required"]] + one_of +
                                 [f"{k}={v}" for k, v in row["options"].items() if k not in row.get("one_of", ())])
    return cells


def _floats(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)

"""FIQA teachers by name: each turns a batch of properly aligned faces into quality scores.

A teacher states its direction (``higher_is_better``); the label job writes its scores
to the column ``q_<name>``. Rows a teacher cannot score (an identity its head does not
know, an id missing from an external table) get NaN and a reason, never a made-up value.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from aikd.errors import ComponentError


@dataclass
class TeacherBatch:
    """What a teacher sees: aligned RGB crops (or None if it needs no images) and ids."""

    image_ids: np.ndarray
    subject_ids: np.ndarray
    aligned: np.ndarray | None
    columns: dict[str, np.ndarray]  # the shard's other columns for these rows


@dataclass
class Scores:
    values: np.ndarray  # float32, NaN where not scored
    reasons: dict[int, str]  # row -> why it has no score


class Teacher(abc.ABC):
    """What a teacher is, as class attributes (read without building it; the first docstring line describes it)."""

    name: str = ""
    higher_is_better: bool = True
    needs_images: bool = True
    # aligned crop side; None on the class where each instance takes it from its model's card
    input_size: int | None = None
    one_of: tuple[str, ...] = ()  # options of which exactly one must be given (beyond those with no default)

    @abc.abstractmethod
    def score(self, batch: TeacherBatch) -> Scores:
        """Quality of every row of the batch."""


_TEACHERS: dict[str, type[Teacher]] = {}


def register_teacher(name: str):
    def wrap(cls):
        if name in _TEACHERS:
            raise ComponentError(f"teacher {name!r} registered twice")
        cls.name = name
        _TEACHERS[name] = cls
        return cls

    return wrap


def list_teachers() -> list[str]:
    _load()
    return sorted(_TEACHERS)


def teacher_class(name: str) -> type[Teacher]:
    _load()
    if name not in _TEACHERS:
        raise ComponentError(f"unknown teacher {name!r}; valid: {', '.join(sorted(_TEACHERS))}")
    return _TEACHERS[name]


def create_teacher(name: str, **options) -> Teacher:
    """Build a registered teacher; options that are None are dropped."""
    cls = teacher_class(name)
    try:
        return cls(**{k: v for k, v in options.items() if v is not None})
    except (TypeError, ValueError) as err:
        raise ComponentError(f"bad options for teacher {name!r}: {err}") from None


def _load() -> None:
    from aikd.teachers import external, fr_teachers  # noqa: F401  (registration side effect)

"""FIQA teachers by name: each turns a batch of properly aligned faces into quality scores.

A teacher states its direction (``higher_is_better``); the label job writes its scores
to the column ``q_<name>``. Rows a teacher cannot score (an identity its head does not
know, an id missing from an external table) get NaN and a reason, never a made-up value.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from aikd.named import Named


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


def _load() -> None:
    from aikd.teachers import external, fr_teachers  # noqa: F401  (registration side effect)


_REGISTRY: Named[Teacher] = Named("teacher", _load)
register_teacher = _REGISTRY.register
list_teachers = _REGISTRY.names
teacher_class = _REGISTRY.get
create_teacher = _REGISTRY.create

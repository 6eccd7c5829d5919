"""Classes by name: the registry shape teachers and face detectors share.

A module registers a class under a name with a decorator; a spec names it, and
:meth:`Named.create` builds it with the spec's options. The modules that register are
imported on the first lookup (``load``), so reading a registry's names never imports
more than it must, and nothing imports them in a circle at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from aikd.errors import ComponentError

T = TypeVar("T")


class Named(Generic[T]):
    """The ``what`` classes (e.g. "teacher") registered by name; ``load`` imports the modules that register them."""

    def __init__(self, what: str, load: Callable[[], None]):
        self.what, self._load, self._classes = what, load, {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: registers the class under ``name`` and sets its ``name`` attribute."""
        def wrap(cls: type[T]) -> type[T]:
            if name in self._classes:
                raise ComponentError(f"{self.what} {name!r} registered twice")
            cls.name = name
            self._classes[name] = cls
            return cls

        return wrap

    def names(self) -> list[str]:
        self._load()
        return sorted(self._classes)

    def get(self, name: str) -> type[T]:
        self._load()
        if name not in self._classes:
            raise ComponentError(f"unknown {self.what} {name!r}; valid: {', '.join(sorted(self._classes))}")
        return self._classes[name]

    def create(self, name: str, **options) -> T:
        """Build a registered class; options that are None are dropped. Bad options are a ComponentError."""
        cls = self.get(name)
        try:
            return cls(**{k: v for k, v in options.items() if v is not None})
        except (TypeError, ValueError) as err:
            raise ComponentError(f"bad options for {self.what} {name!r}: {err}") from None

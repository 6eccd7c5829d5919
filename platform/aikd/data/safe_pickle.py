"""Load pickles from users without running their code.

The reference AI-KD release ships landmarks and quality scores as pickles. A pickle can
name any importable callable, so a plain ``pickle.load`` of a file someone hands in runs
whatever it names. This unpickler resolves only builtin containers/scalars and the few
numpy reconstructors an array or numpy scalar needs, and refuses everything else.
"""

from __future__ import annotations

import io
import pickle

from aikd.errors import AikdError

_ALLOWED: dict[str, set[str]] = {
    "builtins": {"dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str",
                 "int", "float", "complex", "bool", "slice", "range"},
    "collections": {"OrderedDict"},
    "_codecs": {"encode"},  # protocol-2 pickles carry raw bytes as latin-1 text through it
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}


class UnsafePickleError(AikdError):
    """The pickle names something other than plain data."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refusing to load {module}.{name}: only builtin containers, numbers, "
            "strings and numpy arrays/scalars are allowed in a data pickle "
            "(a pickle that names other objects can run code when loaded)"
        )


def safe_loads(data: bytes, source: str = "<bytes>"):
    """Unpickle ``data`` allowing only plain data; raise :class:`UnsafePickleError` otherwise."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as err:  # truncated or corrupt file: name it
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(err).__name__}: {err})") from None

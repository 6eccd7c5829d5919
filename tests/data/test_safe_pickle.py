import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from aikd.data.safe_pickle import UnsafePickleError, safe_loads


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch /tmp/aikd-pwned",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_and_numpy_load(protocol):
    data = {"a/1.jpg": (np.arange(5, dtype=np.float32), np.ones((5, 2))), "s": np.float64(0.25),
            "n": [1, 2.5, "x", None, True], "o": OrderedDict(k=b"bytes")}
    out = safe_loads(pickle.dumps(data, protocol=protocol))
    np.testing.assert_array_equal(out["a/1.jpg"][1], np.ones((5, 2)))
    assert out["s"] == 0.25 and out["n"] == [1, 2.5, "x", None, True] and out["o"]["k"] == b"bytes"


def test_a_pickle_that_would_run_a_command_is_refused(tmp_path):
    payload = pickle.dumps({"img.jpg": RunsACommand()})
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        safe_loads(payload, "landmarks.pkl")
    assert not os.path.exists("/tmp/aikd-pwned")


@pytest.mark.parametrize("name", ["builtins.eval", "builtins.getattr", "builtins.__import__", "numpy.load"])
def test_dangerous_globals_are_refused(name):
    module, attr = name.rsplit(".", 1)
    payload = b"c" + module.encode() + b"\n" + attr.encode() + b"\n."
    with pytest.raises(UnsafePickleError, match=name.replace(".", r"\.")):
        safe_loads(payload)


def test_corrupt_pickle_is_named():
    with pytest.raises(UnsafePickleError, match="scores.pkl: not a readable pickle"):
        safe_loads(pickle.dumps({"a": 1})[:-3], "scores.pkl")

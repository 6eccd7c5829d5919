"""Work items over a pool of Ray Data actors: the one helper of label, evaluate (and scoring)."""

import sys

import numpy as np
import pytest
from ray import cloudpickle

from aikd.actor_pool import map_actors, pool_size
from aikd.config import Resources
from aikd.errors import AikdError

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import a test module


class Tagger:
    """Loads its state once; tags each item with its own id, the device Ray gave it and its pid."""

    def __init__(self, tag: str):
        import os

        from aikd.runtime import actor_device

        self.tag, self.device, self.pid = tag, str(actor_device()), os.getpid()

    def __call__(self, items: dict) -> dict:
        n = len(items["item"])
        return {"item": items["item"], "tag": np.array([self.tag] * n), "device": np.array([self.device] * n),
                "pid": np.full(n, self.pid)}


def test_pool_size_is_the_workers_asked_for_but_never_more_than_the_items():
    assert pool_size(Resources(workers=4), 10) == 4
    assert pool_size(Resources(workers=4), 2) == 2
    assert pool_size(Resources(workers=4), 0) == 1


def test_every_item_is_handled_once_by_an_actor_built_with_the_kwargs(ray_local):
    items = [{"item": i} for i in range(7)]
    rows = map_actors(items, Tagger, {"tag": "t"}, Resources(workers=2, cpus_per_worker=0.5)).take_all()
    assert sorted(r["item"] for r in rows) == list(range(7))
    assert {r["tag"] for r in rows} == {"t"}
    assert {r["device"] for r in rows} == {"cpu"}  # no GPU asked for: CPU, whatever the machine has
    assert len({r["pid"] for r in rows}) <= 2  # long-lived actors, at most the pool's size


def test_no_items_is_a_clear_error():
    with pytest.raises(AikdError, match="Tagger: no work items"):
        map_actors([], Tagger, {"tag": "t"}, Resources())

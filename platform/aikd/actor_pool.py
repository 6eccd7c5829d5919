"""Work items over a pool of long-lived Ray Data actors: the shape of every actor-pool job.

The pipeline's decode/warp stage, labelling, evaluation scoring and gallery scoring all
hand whole work items (a shard, a row group) to actors that load their models or state
once; gallery scoring adds a second pool (:func:`then_actors`) that takes the first
one's output blocks. One dataset row per item, one item per call: the pool balances
items, and each actor keeps calls queued, which avoids the gap Ray's scheduler leaves
between short tasks on a busy machine. The stream is paced (:mod:`aikd.data.pacing`).

Each pool's creation makes Ray's core worker log one error-level line ("Actor ... has
constructor arguments in the object store and max_restarts > 0"). It cannot be avoided
from here: Ray Data itself puts each pool's data context and map transformer in the
object store and passes them as actor arguments, and its actors restart without limit
by default, which the worker-loss and node-preemption guarantees rely on
(``max_restarts=0`` would silence the line and lose them). The arguments stay in scope
while the dataset runs, which is the case the line warns about, so the console drops it
(:mod:`aikd.console`); it stays in the driver's log file.
"""

from __future__ import annotations

import ray

from aikd.config import Resources
from aikd.data.pacing import paced
from aikd.errors import AikdError


def remote_args(resources: Resources) -> dict:
    """Ray options of one actor beyond CPUs and GPUs: custom resources and, unless packed, spreading."""
    args: dict = {"resources": resources.custom} if resources.custom else {}
    if resources.placement != "pack":
        args["scheduling_strategy"] = "SPREAD"
    return args


def pool_size(resources: Resources, items: int) -> int:
    """As many actors as asked for, never more than there are items to give them."""
    return max(1, min(resources.workers, items))


def map_actors(items: list[dict], actor: type, kwargs: dict, resources: Resources) -> ray.data.Dataset:
    """A lazy dataset of ``actor(**kwargs)(batch of one item)`` over ``items``, on ``resources``.

    ``actor.__call__`` receives a numpy batch holding one item (its fields as columns)
    and returns or yields output batches. Each actor asks Ray for ``cpus_per_worker``
    and ``gpus_per_worker`` (and its ``custom`` resources); it finds its device with :func:`aikd.runtime.actor_device`.
    """
    if not items:
        raise AikdError(f"{actor.__name__}: no work items (no shards or row groups to read)")
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        actor, fn_constructor_kwargs=kwargs, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool_size(resources, len(items))),
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker, **remote_args(resources),
    )
    return paced(ds)


def then_actors(ds: ray.data.Dataset, actor: type, kwargs: dict, resources: Resources,
                blocks: int) -> ray.data.Dataset:
    """A second actor stage over ``ds`` (``blocks`` output blocks): one block of the stage before per call.

    Lets a job put its CPU work (decode, align) and its model (GPU actors on a cluster)
    on separately sized pools.
    """
    ds = ds.map_batches(
        actor, fn_constructor_kwargs=kwargs, batch_size=None, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool_size(resources, blocks)),
        num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker, **remote_args(resources),
    )
    return paced(ds)

"""What a sweep searches: the base distill spec, the search space, and each trial's spec.

A search space maps dotted fields of a distill spec (the keys ``--set`` takes) to a
:class:`~aikd.config.Dimension`. Every entry is checked before any trial starts: the
field must exist and be searchable, both ends of a range and every choice must make a
valid distill spec, and teachers must be label columns of the shards. A failure is one
:class:`~aikd.errors.ConfigError` line naming the entry.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
from pydantic import BaseModel

from aikd.config import Dimension, DistillConfig, Resources, SweepConfig
from aikd.data.shards import shard_files
from aikd.errors import ConfigError
from aikd.spec import read_spec, validate, with_overrides

# fields a trial may not vary, and why
FIXED = {
    "name": "each trial is named after its trial id",
    "storage": "trials live under the sweep",
    "register": "the sweep registers the best trial's student",
    "tracking": "trials are recorded under the sweep's MLflow run",
    "bootstrap": "the sweep builds the embedded default's inputs once",
    "resources": "the sweep plans its concurrency from one trial's resources",
    "data.resources": "the sweep plans its concurrency from one trial's resources",
    "data.split_by": "a sweep validates on held-out identities",
    "validation.select": "the sweep's metric selects each trial's best student",
}


def load_base(cfg: SweepConfig) -> dict:
    """The base distill spec as a mapping, with the sweep's ``fixed`` fields set."""
    if isinstance(cfg.base, dict):
        data, source = dict(cfg.base), "base"
    else:
        data, source = read_spec(cfg.base)  # plain YAML data only, errors in one line
    if data.pop("job", "distill") != "distill":
        raise ConfigError(f"{source}: a sweep's base is a distill spec (job: distill)")
    for dotted in cfg.fixed:
        _check_field(dotted, "fixed", leaf=False)  # a fixed field may set a whole section
    data = with_overrides(data, cfg.fixed)
    data.pop("register", None)  # the sweep registers the winner, not every trial
    validate(DistillConfig, {"name": "base", "storage": "."} | data, source=f"sweep base {source}")
    return data


def quality_columns(shards: list[str]) -> list[str]:
    """The teacher label columns (``q_*``) every shard file has."""
    files = [f for uri in shards for f in shard_files(uri)]
    with ThreadPoolExecutor(16) as pool:  # schema reads are round trips to storage
        schemas = list(pool.map(lambda f: pq.read_schema(f.path, filesystem=f.fs), files))
    common = set.intersection(*({n for n in s.names if n.startswith("q_")} for s in schemas)) if schemas else set()
    return sorted(common)


def default_space(base: DistillConfig, columns: list[str]) -> dict[str, Dimension]:
    """What AI-KD leaves open: misalignment strength, teacher, consistency target, loss weight, head lr, depth."""
    # AI-KD trains with 3 px of landmark noise at 112x112; search up to twice that, at the run's scale
    high = 0.1 if base.data.misalignment_relative else round(6.0 * base.data.image_size / 112, 2)
    return {
        "data.misalignment": Dimension(type="uniform", low=0.0, high=high),
        "data.label": Dimension(type="choice", values=columns or [base.data.label]),
        "objective.consistency_target": Dimension(type="choice", values=["frozen", "shared"]),
        "objective.quality_weight": Dimension(type="loguniform", low=0.1, high=10.0),
        "optim.head_lr": Dimension(type="loguniform", low=0.005, high=0.2),
        "optim.train_last_k": Dimension(type="int", low=0, high=100),
    }


def _check_searchable(dotted: str, where: str) -> None:
    """The dotted path names a leaf field of the distill spec that trials may vary."""
    for prefix, why in FIXED.items():
        if dotted == prefix or dotted.startswith(prefix + "."):
            raise ConfigError(f"{where} {dotted!r}: not searchable ({why})")
    _check_field(dotted, where)


def _check_field(dotted: str, where: str, leaf: bool = True) -> None:
    """The dotted path names a field of the distill spec (a leaf, unless ``leaf`` is False)."""
    node: type[BaseModel] | None = DistillConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if node is None:
            raise ConfigError(f"{where} {dotted!r}: {'.'.join(parts[:i])} is a value, not a section")
        if part not in node.model_fields:
            raise ConfigError(f"{where} {dotted!r}: {part!r} is not a field of {node.__name__} "
                              f"(fields: {', '.join(sorted(node.model_fields))})")
        annotation = node.model_fields[part].annotation
        node = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if leaf and node is not None:
        raise ConfigError(f"{where} {dotted!r}: a section; search one of its fields "
                          f"({', '.join(sorted(node.model_fields))})")


def trial_config(base: dict, params: dict, **fields) -> DistillConfig:
    """One trial's distill spec: the base with the trial's parameters (and ``fields``) set."""
    return validate(DistillConfig, with_overrides(base, params | fields), source="trial")


def check_space(base: dict, space: dict[str, Dimension], columns: list[str], start_with: list[dict]) -> None:
    """Refuse, before any trial starts, a space a trial could not run with (one line naming the entry)."""
    if not space:
        raise ConfigError("space: nothing to search (give at least one dotted field)")
    for dotted, dim in space.items():
        _check_searchable(dotted, "space")
        for value in dim.edges:
            try:
                trial_config(base, {dotted: value})
            except ConfigError as err:
                raise ConfigError(f"space {dotted!r}: the value {value!r} makes an invalid distill spec: "
                                  f"{str(err).split('invalid DistillConfig: ')[-1]}") from None
        if dotted == "data.label":
            missing = [v for v in dim.edges if v not in columns]
            if missing:
                raise ConfigError(f"space 'data.label': {missing} not label columns of the shards "
                                  f"(they have {columns or 'none'})")
    for i, point in enumerate(start_with):
        for dotted, value in point.items():
            if dotted not in space:
                raise ConfigError(f"start_with[{i}]: {dotted!r} is not searched (space: {', '.join(space)})")
            if not contains(space[dotted], value):
                raise ConfigError(f"start_with[{i}]: {dotted}={value!r} lies outside its dimension")
        if set(point) != set(space):
            raise ConfigError(f"start_with[{i}]: give every searched field; missing {sorted(set(space) - set(point))}")


def contains(dim: Dimension, value) -> bool:
    if dim.type == "choice":
        return value in dim.values
    if dim.type == "int" and not float(value).is_integer():
        return False
    return dim.low <= value <= dim.high


def tune_space(space: dict[str, Dimension]) -> dict:
    """The space in Ray Tune's terms (OptunaSearch converts it to Optuna's distributions)."""
    from ray import tune

    def one(dim: Dimension):
        if dim.type == "uniform":
            return tune.uniform(dim.low, dim.high)
        if dim.type == "loguniform":
            return tune.loguniform(dim.low, dim.high)
        if dim.type == "int":
            return tune.randint(int(dim.low), int(dim.high) + 1)  # Tune's upper bound is exclusive
        return tune.choice(list(dim.values))

    return {dotted: one(dim) for dotted, dim in space.items()}


def optuna_distribution(dim: Dimension):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.type == "choice":
        return CategoricalDistribution(list(dim.values))
    if dim.type == "int":
        return IntDistribution(int(dim.low), int(dim.high))
    return FloatDistribution(dim.low, dim.high, log=dim.type == "loguniform")


def trial_resources(base: DistillConfig, driver: Resources) -> dict[str, float]:
    """What one trial holds at once: its driver, its Train workers and its decode/warp actors."""
    train, decode = base.resources, base.data.resources
    need = {"CPU": driver.cpus_per_worker + train.workers * train.cpus_per_worker
            + decode.workers * decode.cpus_per_worker,
            "GPU": train.workers * train.gpus_per_worker}
    for group in (driver, train, decode):
        for name, amount in group.custom.items():
            need[name] = need.get(name, 0.0) + group.workers * amount
    return need


def fit_concurrency(need: dict[str, float], cluster: dict[str, float]) -> int:
    """How many trials the cluster's CPUs and GPUs hold at once (0: not even one)."""
    fits = [math.floor(cluster.get(k, 0.0) / v + 1e-9) for k, v in need.items() if v > 0]
    return min(fits) if fits else 0

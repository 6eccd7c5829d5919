"""The train/validation split, defined once: a salted hash of each row's key, never its position.

Used by the pipeline (which rows a split streams), FR training (which identities its
head learns) and the label statistics of distillation (which labels standardise), so
all three always agree on which rows are held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from aikd.config import DataConfig


def stable_hash(keys, seed: int) -> np.ndarray:
    """64-bit hash of each key, salted by the seed; identical on every machine and run."""
    salt = seed.to_bytes(8, "little", signed=True)
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8, key=salt).digest(), "little") for k in keys],
        dtype=np.uint64,
    )


def is_validation(hashes: np.ndarray, val_fraction: float) -> np.ndarray:
    # top bits of the hash as a uniform number in [0, 1)
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53) < val_fraction


def held_out(columns: Mapping[str, Sequence], cfg: DataConfig) -> np.ndarray:
    """True for the rows of the validation split: whole images or whole identities, as ``cfg.split_by`` says."""
    keys = columns[cfg.split_by]
    if cfg.split_by == "subject_id":
        keys = ["" if k is None else k for k in keys]  # rows without an identity hash alike
    return is_validation(stable_hash(keys, cfg.seed), cfg.val_fraction)

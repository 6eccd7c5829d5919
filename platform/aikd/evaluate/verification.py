"""Face verification from embeddings: all mated and non-mated pairs, TAR at a fixed FAR."""

from __future__ import annotations

import numpy as np
import torch

from aikd.errors import AikdError
from aikd.models.transforms import Preprocess


def normalise(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def all_pair_scores(embeddings: np.ndarray, subjects) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of every mated and every non-mated pair (upper triangle)."""
    e = normalise(np.asarray(embeddings, np.float64))
    sim = e @ e.T
    subjects = np.asarray(subjects)
    same = subjects[:, None] == subjects[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    return sim[same & upper], sim[~same & upper]


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """True accept rate at the threshold where at most ``far`` of impostor scores pass.

    Accept means score > threshold; the threshold is the smallest impostor score such
    that the share of impostors above it is <= far.
    """
    if len(impostor) == 0 or len(genuine) == 0:
        raise AikdError("verification needs both mated and non-mated pairs: hold out more identities")
    imp = np.sort(impostor)
    allowed = int(np.floor(far * len(imp)))  # impostors that may pass
    threshold = imp[len(imp) - allowed - 1]
    return float(np.mean(genuine > threshold))


def verification_report(embeddings: np.ndarray, subjects, fars=(1e-3, 1e-2)) -> dict:
    genuine, impostor = all_pair_scores(embeddings, subjects)
    report = {"mated_pairs": int(len(genuine)), "non_mated_pairs": int(len(impostor)),
              "mean_mated_score": float(genuine.mean()), "mean_non_mated_score": float(impostor.mean())}
    for far in fars:
        report[f"tar_at_far_{far:g}"] = tar_at_far(genuine, impostor, far)
    return report


@torch.no_grad()
def embed_batches(model: torch.nn.Module, batches, preprocess: Preprocess, key: str = "aligned"):
    """Embeddings of pipeline batches (``key`` view, fed as the model's card says) with their subject and image ids."""
    model.eval()
    embs, subjects, ids = [], [], []
    for batch in batches:
        out = model(preprocess(batch[key]))
        out = out[0] if isinstance(out, tuple) else out
        embs.append(out.numpy())
        subjects.append(batch["subject_id"])
        ids.append(batch["image_id"])
    return np.concatenate(embs), np.concatenate(subjects), np.concatenate(ids)

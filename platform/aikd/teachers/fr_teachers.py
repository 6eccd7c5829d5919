"""Teachers computed from an FR model: SER-FIQ, CR-FIQA and the embedding norm (MagFace-style).

All three load a model directory written by ``aikd fr-train`` (or any backbone saved with
a card) and read preprocessing from its card.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aikd.errors import ComponentError
from aikd.models.transforms import to_input
from aikd.models.weights import class_centres, load_model
from aikd.runtime import actor_device
from aikd.teachers.base import Scores, Teacher, TeacherBatch, register_teacher


def _device(device: str | None) -> torch.device:
    """The device asked for, else the one Ray gave this actor (CPU outside Ray or without a GPU)."""
    return torch.device(device) if device else actor_device()


class _FRTeacher(Teacher):
    def __init__(self, model: str, device: str | None = None, batch_size: int = 128):
        backbone, card = load_model(model)
        if not hasattr(backbone, "trunk"):
            raise ComponentError(f"{model}: a {card.architecture} backbone, but FR teachers need an IResNet-style one")
        self.device = _device(device)
        self.backbone = backbone.to(self.device).eval()
        self.card, self.batch_size = card, batch_size
        self.input_size = card.input_size

    def _input(self, aligned: np.ndarray) -> torch.Tensor:
        return to_input(aligned, self.card.mean, self.card.std, device=self.device)


@torch.no_grad()
def serfiq_quality(backbone, x: torch.Tensor, passes: int, p: float, generator: torch.Generator,
                   shortcut: bool = True, chunk: int = 16) -> torch.Tensor:
    """SER-FIQ (Terhörst et al. 2020): 2 * sigmoid(-mean pairwise distance) of ``passes``
    normalised embeddings, each with its own dropout mask before the embedding layer.

    The masks are drawn up front, so the head-only shortcut (one trunk pass, ``passes``
    dropout+fc+BN heads) and ``passes`` full forward passes see the same masks. Every
    image of the batch shares the ``passes`` sub-networks, so an image's score does not
    depend on which batch it arrives in.
    """
    backbone.eval()
    flat = backbone.trunk(x) if shortcut else None
    dim = backbone.fc.in_features
    masks = (torch.rand(passes, 1, dim, generator=generator) >= p).to(x.device, x.dtype) / (1.0 - p)
    embeddings = []
    for start in range(0, passes, chunk):  # bounds memory: chunk x batch x trunk features at once
        m = masks[start:start + chunk]
        if shortcut:
            dropped = (flat.unsqueeze(0) * m).reshape(-1, dim)
        else:
            dropped = torch.cat([backbone.trunk(x) * mi for mi in m])
        emb = backbone.features(backbone.fc(dropped)).reshape(len(m), x.shape[0], -1)
        embeddings.append(F.normalize(emb, dim=-1))
    e = torch.cat(embeddings).transpose(0, 1)  # batch x passes x dim
    dist = torch.cdist(e, e)  # batch x passes x passes
    mean_dist = dist.sum((1, 2)) / (passes * (passes - 1))
    return 2.0 * torch.sigmoid(-mean_dist)


@register_teacher("serfiq")
class SerFiq(_FRTeacher):
    """SER-FIQ (training-free): stable embeddings under dropout mean a usable face."""

    def __init__(self, model: str, passes: int = 100, dropout: float = 0.5, seed: int = 0, **kw):
        super().__init__(model, **kw)
        if passes < 2 or not 0.0 < dropout < 1.0:
            raise ComponentError(f"serfiq needs passes >= 2 and 0 < dropout < 1, got {passes}, {dropout}")
        self.passes, self.p, self.seed = passes, dropout, seed

    def score(self, batch: TeacherBatch) -> Scores:
        out = []
        for start in range(0, len(batch.aligned), self.batch_size):
            x = self._input(batch.aligned[start:start + self.batch_size])
            g = torch.Generator().manual_seed(self.seed)  # the same sub-networks for every batch
            out.append(serfiq_quality(self.backbone, x, self.passes, self.p, g).cpu().numpy())
        return Scores(np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32), {})


@register_teacher("norm")
class EmbeddingNorm(_FRTeacher):
    """Embedding norm, MagFace-style: the unnormalised embedding grows with recognisability."""

    @torch.no_grad()
    def score(self, batch: TeacherBatch) -> Scores:
        out = [self.backbone(self._input(batch.aligned[s:s + self.batch_size])).norm(dim=1).cpu().numpy()
               for s in range(0, len(batch.aligned), self.batch_size)]
        return Scores(np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32), {})


@register_teacher("crfiqa")
class CrFiqa(_FRTeacher):
    """CR-FIQA certainty ratio (Boutros et al. 2023): cos(own centre) / (max cos(other centre) + 1 + eps)."""

    def __init__(self, model: str, eps: float = 1e-9, **kw):
        super().__init__(model, **kw)
        centres, classes = class_centres(model)
        self.centres = F.normalize(centres.float(), dim=1).to(self.device)
        self.index = {name: i for i, name in enumerate(classes)}
        self.eps = eps

    @torch.no_grad()
    def score(self, batch: TeacherBatch) -> Scores:
        n = len(batch.aligned)
        values = np.full(n, np.nan, np.float32)
        reasons = {i: f"subject unknown to the CR-FIQA head ({s!r})" for i, s in enumerate(batch.subject_ids)
                   if s not in self.index}
        rows = np.array([i for i in range(n) if i not in reasons], dtype=np.int64)
        for start in range(0, len(rows), self.batch_size):
            part = rows[start:start + self.batch_size]
            emb = F.normalize(self.backbone(self._input(batch.aligned[part])), dim=1)
            cos = emb @ self.centres.T
            own = torch.as_tensor([self.index[batch.subject_ids[i]] for i in part], device=cos.device)
            own_cos = cos.gather(1, own[:, None]).squeeze(1)
            others = cos.scatter(1, own[:, None], float("-inf")).max(1).values
            values[part] = (own_cos / (others + 1.0 + self.eps)).cpu().numpy()
        return Scores(values, reasons)

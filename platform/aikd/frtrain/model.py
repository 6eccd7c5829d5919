"""The model fr-train trains: a backbone plus a margin head, and the identities the head learns."""

from __future__ import annotations

import pyarrow.compute as pc
import torch
import torch.nn as nn

from aikd.config import FRTrainConfig
from aikd.data.schema import SUBJECT_ID
from aikd.data.shards import shard_files
from aikd.data.split import held_out
from aikd.models import create_model
from aikd.models.heads import create_head


class FRModel(nn.Module):
    """Backbone + margin head as one module, so DDP syncs both; forward returns the loss."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x), labels)


def training_classes(cfg: FRTrainConfig) -> list[str]:
    """Identities the head learns: every subject not held out for verification."""
    import pyarrow.parquet as pq

    subjects: set[str] = set()
    for uri in cfg.data.shards:
        for f in shard_files(uri):
            column = pq.read_table(f.path, filesystem=f.fs, columns=[SUBJECT_ID]).column(SUBJECT_ID)
            subjects.update(s for s in pc.unique(column).to_pylist() if s)
    ordered = sorted(subjects)
    out = held_out({SUBJECT_ID: ordered}, cfg.data)
    return [s for s, o in zip(ordered, out, strict=True) if not o]


def build_models(cfg: FRTrainConfig, num_classes: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(cfg.seed)  # same init on every rank and for the untrained baseline
    backbone = create_model(cfg.model, **cfg.model_args)
    head = create_head(cfg.head, backbone.fc.out_features, num_classes, scale=cfg.head_scale,
                       margin=cfg.head_margin)
    return backbone, head

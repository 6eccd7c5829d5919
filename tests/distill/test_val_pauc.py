"""The student's EDC pAUC at every validation: fixed comparisons from the frozen FR backbone, one EDC per view."""

import numpy as np
import torch

from aikd.config import ValidationConfig
from aikd.distill.val_pauc import Comparisons, comparisons, pauc_metrics
from aikd.evaluate.pairs import build_pairs
from aikd.models import create_model
from aikd.models.weights import preprocess_of


def _batches(subjects: list[str], size: int = 64) -> list[dict]:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (len(subjects), size, size, 3), dtype=np.uint8)
    return [{"subject_id": np.array(subjects), "aligned": crops, "misaligned": crops[:, ::-1].copy()}]


def test_comparisons_pair_the_validation_faces_and_score_each_view_with_the_fr_model():
    fr = create_model("iresnet_tiny").eval()
    subjects = [f"s{i // 4}" for i in range(40)]  # 10 identities x 4 faces: 60 mated pairs
    comp, why = comparisons(_batches(subjects), fr, preprocess_of(fr), ValidationConfig(non_mated=500), seed=0)
    assert why == "" and comp.pairs.n_mated == 60 and len(comp.pairs) == 560
    for view in ("aligned", "misaligned"):
        assert comp.scores[view].shape == (560,) and np.all(np.abs(comp.scores[view]) <= 1.0 + 1e-6)
    assert not np.allclose(comp.scores["aligned"], comp.scores["misaligned"])


def test_too_few_mated_pairs_or_pauc_off_give_no_comparisons_and_say_why():
    fr = create_model("iresnet_tiny").eval()
    few = [f"s{i}" for i in range(30)] + ["s0"]  # one mated pair
    comp, why = comparisons(_batches(few), fr, preprocess_of(fr), ValidationConfig(min_mated_pairs=5), seed=0)
    assert comp is None and "1 mated pairs among 31 validation faces" in why and "min_mated_pairs = 5" in why
    comp, why = comparisons(_batches(few), fr, preprocess_of(fr), ValidationConfig(pauc=False), seed=0)
    assert comp is None and "off" in why


def test_a_quality_that_knows_the_bad_faces_has_the_lowest_pauc():
    rng = np.random.default_rng(1)
    subjects = np.repeat(np.arange(50), 6).astype(str)
    pairs = build_pairs(subjects, non_mated=20_000, seed=0)
    bad = rng.random(len(subjects)) < 0.3  # faces that make their mated comparisons fail
    scores = np.where(pairs.mated, 0.7, 0.0) + rng.normal(0, 0.05, len(pairs))
    scores[pairs.mated & (bad[pairs.a] | bad[pairs.b])] -= 0.6
    comp = Comparisons(pairs, {"aligned": scores, "misaligned": scores})
    cfg = ValidationConfig()
    knows = np.where(bad, 0.0, 1.0) + rng.normal(0, 0.01, len(subjects))
    noise = rng.random(len(subjects))
    good = pauc_metrics(comp, {"aligned": knows, "misaligned": knows}, cfg)
    poor = pauc_metrics(comp, {"aligned": noise, "misaligned": -knows}, cfg)
    assert good["val_pauc_aligned"] < poor["val_pauc_aligned"] and good["val_pauc_misaligned"] < poor[
        "val_pauc_misaligned"]
    assert torch.isfinite(torch.tensor(list(good.values()))).all()

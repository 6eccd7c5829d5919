"""Every registered component keeps its metadata's promises; the listing `aikd components` prints says it all.

Cases come from the registries, so a new model, head or teacher is tested by registering it.
"""

import json

import numpy as np
import pytest
import torch

from aikd.components import KINDS, call_options, describe_components, render_components, teacher_row
from aikd.detect import list_detectors
from aikd.errors import ComponentError
from aikd.models import create_model, list_models, model_entrypoint, model_info, resolve_model_info
from aikd.models.heads import create_head, list_heads
from aikd.models.registry import SIZE_ARGS
from aikd.models.weights import CENTRES, card_for, read_card, save_model
from aikd.teachers import TeacherBatch, create_teacher, list_teachers

NARROW = 1 / 16  # every stage 4..32 channels: the registered depth and sizes, trained in seconds on a CPU
SUBJECTS = ["s0", "s1", "s2"]


# ---------------------------------------------------------------- models
@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_what_its_info_says(name):
    info = model_info(name)
    with torch.device("meta"):  # full size without allocating or computing
        model = create_model(name)
        out = model(torch.empty(2, 3, info.input_size, info.input_size))
    assert model.input_size == info.input_size
    assert out.shape == (2, info.embedding_dim)
    assert resolve_model_info(name) == info


@pytest.mark.parametrize("name", list_models())
def test_size_overrides_change_the_info_as_they_change_the_model(name):
    accepted = call_options(model_entrypoint(name))[0]
    overrides = {arg: value for arg, value in (("input_size", 96), ("num_features", 128)) if arg in accepted}
    info = resolve_model_info(name, **overrides)
    with torch.device("meta"):
        model = create_model(name, **overrides)
        out = model(torch.empty(2, 3, info.input_size, info.input_size))
    assert (model.input_size, out.shape[1]) == (info.input_size, info.embedding_dim)
    assert all(getattr(info, SIZE_ARGS[arg]) == value for arg, value in overrides.items())


@pytest.mark.parametrize("name", list_models())
def test_every_model_trains_finite_at_its_input_size(name):
    torch.manual_seed(0)
    info = model_info(name)
    narrow = {"width": NARROW} if "width" in call_options(model_entrypoint(name))[0] else {}
    model = create_model(name, **narrow).train()
    x = torch.randn(2, 3, info.input_size, info.input_size)
    out = model(x)
    assert out.shape == (2, info.embedding_dim) and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    if hasattr(model, "trunk"):  # what the FR teachers rely on: head(trunk(x)) is the forward pass
        with torch.no_grad():
            torch.testing.assert_close(model.eval().head(model.trunk(x)), model(x))


def test_resolving_checks_the_overrides_without_building():
    assert resolve_model_info("iresnet_tiny", input_size=None, width=0.5) == model_info("iresnet_tiny")
    with pytest.raises(ComponentError, match="bad arguments for model 'iresnet_tiny'"):
        resolve_model_info("iresnet_tiny", colour=True)
    with pytest.raises(ComponentError, match="unknown model 'resnet50'"):
        resolve_model_info("resnet50")


def test_a_bare_weights_students_input_size_comes_from_its_registry_entry(monkeypatch):
    from aikd.config import DataConfig, DistillConfig, StudentConfig
    from aikd.distill.worker import student_input_size
    from aikd.models import iresnet

    def never(*args, **kwargs):
        raise AssertionError("a model was built to read its input size")

    monkeypatch.setattr(iresnet.IResNet, "__init__", never)
    data = DataConfig(shards=["x"], label="q_t")
    for args, size in (({}, 64), ({"input_size": 96}, 96)):
        cfg = DistillConfig(name="t", storage="x", data=data,
                            student=StudentConfig(weights="w.pth", backbone="iresnet_tiny", backbone_args=args))
        assert student_input_size(cfg) == size


# ---------------------------------------------------------------- heads
@pytest.mark.parametrize("name", list_heads())
def test_every_head_trains_on_a_small_batch_with_its_listed_defaults(name):
    torch.manual_seed(0)
    row = next(r for r in describe_components(["heads"])["heads"] if r["name"] == name)
    head = create_head(name, 16, 5)
    assert all(getattr(head, option) == default for option, default in row["options"].items())
    embedding = torch.randn(8, 16, requires_grad=True)
    loss = head(embedding, torch.arange(8) % 5)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert torch.isfinite(embedding.grad).all() and torch.isfinite(head.weight.grad).all()


# ---------------------------------------------------------------- teachers
@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict:
    """A value for each option a teacher may need: a tiny FR model saved as fr-train saves one (card, class
    centres) and a shard column."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("teachers")
    model = create_model("iresnet_tiny", width=NARROW).eval()
    save_model(model, str(root / "fr"), card_for(model, "backbone", {"classes": SUBJECTS[:2]}),
               extra={CENTRES: torch.randn(2, model_info("iresnet_tiny").embedding_dim)})
    return {"model": str(root / "fr"), "column": "q_given"}


def minimal_options(row: dict, samples: dict) -> dict:
    needed = row["required"] + row["one_of"][:1]
    missing = [o for o in needed if o not in samples]
    if missing:
        pytest.skip(f"teacher {row['name']} needs {missing}, which this test has no sample of")
    return {o: samples[o] for o in needed}


@pytest.mark.parametrize("name", list_teachers())
def test_every_teacher_is_what_its_row_says_and_scores_a_batch(name, samples):
    row = teacher_row(name)
    assert row["description"] and isinstance(row["higher_is_better"], bool) and isinstance(row["needs_images"], bool)
    if row["required"] or row["one_of"]:
        with pytest.raises(ComponentError, match=f"teacher {name!r}|{name} teacher"):
            create_teacher(name)
    teacher = create_teacher(name, **minimal_options(row, samples))
    assert (teacher.name, teacher.higher_is_better, teacher.needs_images) == (
        name, row["higher_is_better"], row["needs_images"])
    images = None
    if row["needs_images"]:
        # a fixed size on the class, else the one its model's card says
        assert teacher.input_size == (row["input_size"] or read_card(samples["model"]).input_size)
        images = np.random.default_rng(0).integers(0, 256, (3, teacher.input_size, teacher.input_size, 3), np.uint8)
    scores = teacher.score(TeacherBatch(np.array(["a", "b", "c"]), np.array(SUBJECTS), images,
                                        {samples["column"]: np.array([0.1, 0.2, 0.3])}))
    assert scores.values.shape == (3,) and scores.values.dtype == np.float32
    assert all(np.isfinite(v) or i in scores.reasons for i, v in enumerate(scores.values))


# ---------------------------------------------------------------- the listing
def test_the_listing_is_json_and_names_every_registered_component():
    listing = describe_components()
    assert tuple(listing) == KINDS
    assert json.loads(json.dumps(listing)) == listing
    assert [r["name"] for r in listing["backbones"]] == list_models()
    assert [r["name"] for r in listing["heads"]] == list_heads()
    assert [r["name"] for r in listing["teachers"]] == list_teachers()
    assert [r["name"] for r in listing["detectors"]] == list_detectors() == ["mtcnn"]
    for row in listing["backbones"]:
        info = model_info(row["name"])
        assert (row["input_size"], row["embedding_dim"], row["description"]) == (
            info.input_size, info.embedding_dim, info.description)
        assert row["options"]["input_size"] == info.input_size  # the entry's default is its metadata
    assert all(r["description"] for rows in listing.values() for r in rows)


def test_the_rendered_listing_has_a_table_per_kind():
    text = render_components()
    listing = describe_components()
    for kind, rows in listing.items():
        assert kind in text and all(r["name"] in text for r in rows)
    assert "model (required)" in text and "column | table (one required)" in text
    assert render_components({"heads": listing["heads"]}).startswith("heads\n")


def test_an_unknown_kind_is_named():
    with pytest.raises(ComponentError, match="unknown component kind 'students'; valid: backbones, heads, teachers, "
                                             "detectors"):
        describe_components(["students"])

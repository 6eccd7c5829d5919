"""The smallest valid spec of each job kind, shared by the spec tests (bad fields, printed specs)."""

# each bad-spec case changes exactly one field of these
MINIMAL = {
    "ingest": {"images": "photos", "out": "faces"},
    "fr-train": {"data": {"shards": ["faces"], "split_by": "subject_id"}, "out": "model"},
    "label": {"shards": ["faces"], "out": "labelled", "teachers": [{"name": "norm", "options": {"model": "fr"}}]},
    "distill": {"name": "run", "storage": "runs", "data": {"shards": ["labelled"], "label": "q_norm"},
                "student": {"weights": "fr"}},
    "evaluate": {"shards": ["faces"], "out": "report", "fr_model": "fr",
                 "models": [{"name": "norm", "teacher": "norm"}]},
    "score": {"shards": ["faces"], "out": "scores", "models": [{"name": "student", "model": "best"}]},
    "sweep": {"name": "sweep", "storage": "sweeps", "base": "distill.yaml"},
    "experiment": {"name": "exp", "root": "exp", "default": {"root": "default"}, "variants": {"ai-kd": {}}},
}

"""A job's spec fields as a user meets them: `aikd <job> --help` lists them, `aikd spec <job>` prints a
whole spec to start from, both read off the spec models."""

from __future__ import annotations

from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from aikd.cli import main
from aikd.fields import REQUIRED, fields_help, job_spec, spec_fields, type_name
from aikd.jobs import KINDS, job_kind
from aikd.spec import deep_merge, load_spec
from minimal_specs import MINIMAL  # beside conftest.py


class Inner(BaseModel):
    size: int = Field(3, description="how big")


class Outer(BaseModel):
    path: str = Field(description="where")
    mode: Literal["a", "b"] = "a"
    inner: Inner = Inner(size=5)
    items: list[Inner] = Field(default_factory=list)
    extra: Inner | None = None


def test_fields_are_walked_with_dotted_names_types_and_the_parents_defaults():
    rows = {r.name: r for r in spec_fields(Outer)}
    assert list(rows) == ["path", "mode", "inner", "inner.size", "items", "items.0.size", "extra", "extra.size"]
    assert rows["path"].default is REQUIRED and rows["path"].description == "where"
    assert rows["mode"].type == "'a' | 'b'" and rows["inner.size"].default == 5  # the parent's default, not 3
    assert rows["items.0.size"].default == 3 and rows["items"].many
    assert type_name(list[str] | None) == "list[str] | None"


def test_help_gives_each_field_one_line_with_type_default_and_description():
    lines = fields_help(Outer).splitlines()[1:]
    assert len(lines) == len(spec_fields(Outer))
    assert any(line.split() == ["inner.size", "int", "=", "5", "how", "big"] for line in lines)
    assert any(line.split()[:4] == ["path", "str", "=", "required"] for line in lines)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_light_lookup_finds_each_kinds_own_spec_model(kind):
    assert job_spec(kind) is job_kind(kind).spec


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_printed_spec_with_its_required_fields_set_is_the_minimal_spec(kind, tmp_path, capsys):
    """Every printed default is the model's real default: filling in what it marks REQUIRED gives the
    same config as the smallest spec that leaves everything else out."""
    assert main(["spec", kind]) == 0
    printed = capsys.readouterr().out
    assert printed.count("REQUIRED") >= 1 and yaml.safe_load(printed)["job"] == kind
    filled, minimal = tmp_path / "filled.yaml", tmp_path / "minimal.yaml"
    filled.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(printed), MINIMAL[kind])))
    minimal.write_text(yaml.safe_dump({"job": kind} | MINIMAL[kind]))
    spec = job_kind(kind).spec
    assert load_spec(str(filled), spec) == load_spec(str(minimal), spec)


def test_a_job_commands_help_lists_its_spec_fields(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["score", "--help"])
    assert stop.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:4] == ["models.0.model", "str", "=", "required"] for line in lines)
    assert any(line.split()[:4] == ["decode.workers", "int", "=", "1"] for line in lines)
    assert any(line.split()[:4] == ["alignment", "'landmarks'", "|", "'box'"] for line in lines)

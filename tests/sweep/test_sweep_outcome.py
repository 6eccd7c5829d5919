"""The outcome of a sweep: the best trial, its table, plot and parameter importances."""

import csv
import io
import json

from aikd.config import Dimension
from aikd.storage import resolve
from aikd.sweep.outcome import TrialRow, best_row, importances, table_csv, table_md, write_outcome

SPACE = {"data.label": Dimension(type="choice", values=["q_serfiq", "q_norm"]),
         "data.misalignment": Dimension(type="uniform", low=0.0, high=4.0)}


def rows() -> list[TrialRow]:
    def row(trial, status, metric, label, strength):
        return TrialRow(trial=trial, status=status, metric=metric, last=metric, steps=12, validations=4,
                        params={"data.label": label, "data.misalignment": strength}, run=f"/s/trials/{trial}")

    return [row("a", "completed", 0.08, "q_serfiq", 1.0), row("b", "stopped", 0.05, "q_norm", 3.0),
            row("c", "failed", None, "q_norm", 1.0), row("d", "completed", 0.12, "q_serfiq", 3.5),
            row("e", "completed", 0.07, "q_norm", 0.5)]


def test_the_best_trial_has_the_best_metric_and_never_failed():
    assert best_row(rows(), "min").trial == "b"  # a stopped trial may still be the best one
    assert best_row(rows(), "max").trial == "d"
    assert best_row([r for r in rows() if r.status == "failed"], "min") is None


def test_the_table_lists_every_trial_with_its_parameters():
    parsed = list(csv.DictReader(io.StringIO(table_csv(rows()))))
    assert [r["trial"] for r in parsed] == ["a", "b", "c", "d", "e"]
    assert parsed[1]["status"] == "stopped" and parsed[1]["data.label"] == "q_norm"
    assert parsed[2]["metric"] == ""  # a failed trial has no metric
    md = table_md(rows(), "val_pauc_misaligned", best_row(rows(), "min"))
    assert md.splitlines()[0].startswith("| trial | status | val_pauc_misaligned |")
    assert "| b **best** | stopped | 0.05 |" in md


# the cells and formats the table has always had (4 significant digits, empty for a missing metric, the best
# trial marked); only the separator row now spans the column widths
EXPECTED_MD = """\
| trial | status | val_pauc_misaligned | last | steps | validations | data.label | data.misalignment |
|------------|-----------|-----------------------|--------|---------|---------------|--------------|---------------------|
| a | completed | 0.1235 | 0.08 | 12 | 4 | q_serfiq | 1e-05 |
| b **best** | stopped | 0.05 | 0.05 | 12 | 4 | q_norm | 3 |
| c | failed |  |  | 12 | 4 | q_norm | 1 |
| d | completed | 0.12 | 0.12 | 12 | 4 | q_serfiq | 3.5 |
| e | completed | 0.07 | 0.07 | 12 | 4 | q_norm | 0.5 |
"""


def test_the_markdown_table_keeps_its_columns_values_and_formats():
    table = rows()
    table[0].metric, table[0].params["data.misalignment"] = 0.123456789, 1e-05
    assert table_md(table, "val_pauc_misaligned", best_row(table, "min")) == EXPECTED_MD
    assert table_md([], "m", None) == "| trial | status | m | last | steps | validations |\n" \
                                      "|---------|----------|-----|--------|---------|---------------|\n"


def test_importances_rank_the_parameter_that_drives_the_metric():
    labels = ["q_serfiq", "q_norm"]
    varied = [TrialRow(trial=str(i), status="completed", metric=0.1 * i + 0.001 * (i % 2), last=None, steps=1,
                       validations=1, params={"data.label": labels[i % 2], "data.misalignment": 0.4 * i})
              for i in range(10)]
    out = importances(varied, SPACE, "min")
    assert set(out["importances"]) == set(SPACE)
    assert out["importances"]["data.misalignment"] > out["importances"]["data.label"]
    assert "note" in importances(varied[:1], SPACE, "min")  # one trial: nothing to compare
    # a 2 x 2 grid where only the strength matters (the sweep test's shape): it gets all the importance
    grid = [TrialRow(trial=f"{label}{s}", status="completed", metric=0.05 * s + (0.01 if label == "q_norm" else 0),
                     last=None, steps=1, validations=1, params={"data.label": label, "data.misalignment": s})
            for label in ("q_serfiq", "q_norm") for s in (1.0, 4.0)]
    assert importances(grid, SPACE, "min")["importances"]["data.misalignment"] > 0.9


def test_the_outcome_files_land_beside_the_sweep(tmp_path):
    home = resolve(str(tmp_path / "sweep"))
    out = write_outcome(home, rows(), SPACE, "val_pauc_misaligned", "min")
    assert out["best"].trial == "b"
    for name in out["files"]:
        assert home.join(name).exists()
    assert home.join("trials.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(home.join("importances.json").read_text()) == out["importances"]

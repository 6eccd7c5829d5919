"""The evaluation job end to end on synthetic faces: a teacher and a student, every condition; its tables."""

import json

import numpy as np
import pytest

from aikd.config import EvaluateConfig, FIQASpec
from aikd.evaluate.report import html_page, markdown_table, pauc_overview, pipe_table, report_tables
from aikd.storage import resolve


def test_report_renders_pngs_and_an_html_page_that_references_them(report):
    cfg, result = report
    out = resolve(cfg.out)
    page = out.join("index.html").read_text()
    for condition in ("aligned", "misaligned_3", "box"):
        png = out.join(f"edc_{condition}_fmr0.01.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f'src="edc_{condition}_fmr0.01.png"' in page
    table = out.join("pauc.md").read_text()
    assert "| norm | misaligned_3 |" in table and "| student | box |" in table


def test_report_numbers_are_consistent(report):
    cfg, result = report
    data = json.loads(resolve(cfg.out).join("report.json").read_text())
    assert data["faces"] == 96 and data["mated_pairs"] == 12 * 28 and data["non_mated_pairs"] == 5000
    assert {r["condition"] for r in data["pauc"]} == {"aligned", "misaligned_3", "box"}
    for row in data["pauc"]:
        assert 0 <= row["pauc_0.2"] <= row["pauc_0.3"] <= 0.3
        assert row["pauc_0.2_minus_best"] <= row["pauc_0.2"]
    starts = {r["condition"]: r["start_fnmr"] for r in data["pauc"]}
    assert starts["misaligned_3"] >= starts["aligned"]  # misalignment hurts recognition
    inv = {(r["model"], r["condition"]): r["spearman_vs_aligned"] for r in data["invariance"]}
    assert set(inv) == {("norm", "misaligned_3"), ("norm", "box"), ("student", "misaligned_3"), ("student", "box")}
    assert all(np.isfinite(v) for v in inv.values())


def test_every_pauc_has_an_interval_and_compared_models_a_verdict(report):
    cfg, _ = report
    out = resolve(cfg.out)
    data = json.loads(out.join("report.json").read_text())
    assert data["bootstrap"] == {"resamples": 200, "unit": "identity", "identities": 12, "level": 0.95}
    inside = 0
    for row in data["pauc"]:
        lo, hi = row["pauc_0.2_ci"]
        assert 0 <= lo <= hi <= 0.2
        inside += lo <= row["pauc_0.2"] <= hi
    assert inside >= 0.8 * len(data["pauc"])  # a percentile interval need not hold the estimate, but mostly does
    diffs = data["differences"]
    assert {(d["condition"], d["limit"]) for d in diffs} == {(c, lim) for c in ("aligned", "misaligned_3", "box")
                                                             for lim in (0.2, 0.3)}
    for d in diffs:
        assert (d["a"], d["b"]) == ("student", "norm") and d["low"] <= d["high"]
        assert d["verdict"] in ("better", "worse", "no detectable difference")
    page = out.join("index.html").read_text()
    assert "200 resamples of the 12 identities" in page and diffs[0]["verdict"] in page
    assert "| student | norm | aligned | 0.01 | 0.2 |" in out.join("pauc.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"compare": [("student", "nobody")]}, "'nobody' is not a model name"),
    ({"compare": [("student", "student")]}, "compares a model with itself"),
    ({"compare": [("student", "norm")], "ci_resamples": 0}, "compare needs intervals"),
    ({"mode": "reestimated"}, "intervals are computed for mode: fixed"),
])
def test_comparisons_are_checked_against_the_spec(change, message):
    spec = {"shards": ["x"], "out": "y", "fr_model": "m", "models": [
        {"name": "norm", "teacher": "norm"}, {"name": "student", "student": "s"}]} | change
    with pytest.raises(ValueError, match=message):
        EvaluateConfig(**spec)


def test_model_specs_need_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of 'teacher' or 'student'"):
        FIQASpec(name="x")


RESULTS = {  # what results.py hands the report, cut to two rows
    "pauc": [{"model": "norm", "condition": "aligned", "fmr": 0.01, "start_fnmr": 0.123456, "pauc_0.2": 0.0456789,
              "pauc_0.2_ci": [0.03, 0.061234], "pauc_0.3": 0.07, "pauc_0.2_minus_best": 0.01234,
              "pauc_0.3_minus_best": 0.02},
             {"model": "student", "condition": "misaligned_3", "fmr": 0.001, "start_fnmr": 0.2, "pauc_0.2": 0.05,
              "pauc_0.3": 0.0812345, "pauc_0.3_ci": [0.07, 0.09], "pauc_0.2_minus_best": 0.0,
              "pauc_0.3_minus_best": 0.001}],
    "invariance": [{"model": "student", "condition": "misaligned_3", "spearman_vs_aligned": 0.87654}],
    "differences": [{"a": "student", "b": "norm", "condition": "aligned", "fmr": 0.01, "limit": 0.2,
                     "difference": -0.01234, "low": -0.02, "high": 0.00123, "verdict": "no detectable difference"}],
    "bootstrap": {"level": 0.95, "resamples": 200, "identities": 12},
    "faces": 96, "mated_pairs": 336, "non_mated_pairs": 5000, "mode": "fixed", "pair_quality": "min",
}

# the cells and formats the report has always written; only the separator rows now span the column widths
EXPECTED_MD = """\
| model | condition | FMR | FNMR@0 | pAUC@0.2 | pAUC@0.3 | pAUC@0.2 - best | pAUC@0.3 - best |
|---------|--------------|-------|----------|-------------------------|-------------------------|-------------------|-------------------|
| norm | aligned | 0.01 | 0.1235 | 0.0457 [0.0300, 0.0612] | 0.0700 | 0.0123 | 0.0200 |
| student | misaligned_3 | 0.001 | 0.2000 | 0.0500 | 0.0812 [0.0700, 0.0900] | 0.0000 | 0.0010 |

| model | condition | Spearman vs aligned |
|---------|--------------|-----------------------|
| student | misaligned_3 | 0.877 |

| a | b | condition | FMR | pAUC@ | a - b | 95% interval | verdict |
|---------|------|-------------|-------|---------|---------|--------------------|--------------------------|
| student | norm | aligned | 0.01 | 0.2 | -0.0123 | [-0.0200, +0.0012] | no detectable difference |
"""


def test_the_markdown_tables_keep_their_columns_values_and_formats():
    assert markdown_table(RESULTS, [0.2, 0.3]) == EXPECTED_MD


def test_tables_without_rows_are_left_out_but_the_pauc_table_stays():
    bare = RESULTS | {"invariance": [], "differences": [], "pauc": []}
    assert markdown_table(bare, [0.2]) == ("| model | condition | FMR | FNMR@0 | pAUC@0.2 | pAUC@0.2 - best |\n"
                                           "|---------|-------------|-------|----------|------------|"
                                           "-------------------|\n")


def test_the_html_page_has_one_table_per_markdown_table_with_the_same_cells():
    page = html_page(RESULTS, report_tables(RESULTS, [0.2, 0.3]), [])
    assert page.count("<table") == 3 and "|" not in page
    for cell in ("<th>pAUC@0.2 - best</th>", "<td>0.0457 [0.0300, 0.0612]</td>", "<td>0.877</td>",
                 "<th>95% interval</th>", "<td>[-0.0200, +0.0012]</td>", "<td>no detectable difference</td>"):
        assert cell in page


def test_the_html_tables_escape_their_cells():
    odd = RESULTS | {"invariance": [{"model": "a<b", "condition": "box", "spearman_vs_aligned": 0.5}]}
    page = html_page(odd, report_tables(odd, [0.2]), [])
    assert "<td>a&lt;b</td>" in page and "a<b" not in page


def test_the_console_overview_folds_the_conditions_into_columns_in_the_reports_order():
    def row(model, condition, fmr, value):
        return {"model": model, "condition": condition, "fmr": fmr, "pauc_0.2": value}

    pauc = [row(m, c, f, v) for f in (0.001, 0.01) for c, v in (("aligned", 0.02), ("box", 0.1))
            for m in ("teacher serfiq", "student")]
    pauc[-1] = row("student", "box", 0.01, 0.12345)
    assert pipe_table(pauc_overview(pauc, 0.2)) == (
        "| FMR | model | aligned | box |\n"
        "|-------|----------------|-----------|--------|\n"
        "| 0.001 | teacher serfiq | 0.0200 | 0.1000 |\n"
        "| 0.001 | student | 0.0200 | 0.1000 |\n"
        "| 0.01 | teacher serfiq | 0.0200 | 0.1000 |\n"
        "| 0.01 | student | 0.0200 | 0.1235 |")

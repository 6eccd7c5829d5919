"""The evaluation report: pAUC tables, EDC plots, one HTML page, written under the job's output.

    results (:mod:`aikd.evaluate.results`) -> pauc.md, report.json, edc_<condition>_fmr<f>.png, index.html
"""

from __future__ import annotations

import html
import io
import json

import numpy as np
import pandas as pd

from aikd.config import EvaluateConfig
from aikd.evaluate.edc import pauc
from aikd.storage import resolve


def pipe_table(frame: pd.DataFrame) -> str:
    """A Markdown pipe table of already formatted cells, written as they are: numbers are not parsed
    again and cells are not padded to the column's width."""
    return frame.to_markdown(index=False, tablefmt="pipe", stralign=None, numalign=None, disable_numparse=True)


def html_table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0)  # cells escaped by pandas


def pauc_table(results: dict, limits: list[float]) -> pd.DataFrame:
    """One row per model, condition and FMR: pAUC per limit (with its interval), and its distance to the best."""
    head = ["model", "condition", "FMR", "FNMR@0"] + [f"pAUC@{lim:g}" for lim in limits] + [
        f"pAUC@{lim:g} - best" for lim in limits]
    rows = []
    for r in results["pauc"]:
        cells = [r["model"], r["condition"], f"{r['fmr']:g}", f"{r['start_fnmr']:.4f}"]
        cells += [_with_interval(r[f"pauc_{lim:g}"], r.get(f"pauc_{lim:g}_ci")) for lim in limits]
        cells += [f"{r[f'pauc_{lim:g}_minus_best']:.4f}" for lim in limits]
        rows.append(cells)
    return pd.DataFrame(rows, columns=head)


def pauc_overview(pauc: list[dict], limit: float) -> pd.DataFrame:
    """pAUC@``limit`` of each model (a row per FMR and model) under each condition (a column): the report's
    first table folded to fit a console."""
    frame = pd.DataFrame(pauc)
    frame["value"] = frame[f"pauc_{limit:g}"].map("{:.4f}".format)
    wide = frame.pivot(index=["fmr", "model"], columns="condition", values="value")
    order = frame.drop_duplicates(["fmr", "model"])[["fmr", "model"]].itertuples(index=False, name=None)
    wide = wide.reindex(index=list(order), columns=list(dict.fromkeys(frame["condition"]))).reset_index()
    wide["fmr"] = wide["fmr"].map("{:g}".format)
    return wide.rename(columns={"fmr": "FMR"})


def _with_interval(value: float, ci: list[float] | None) -> str:
    return f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def invariance_table(results: dict) -> pd.DataFrame:
    rows = [[r["model"], r["condition"], f"{r['spearman_vs_aligned']:.3f}"] for r in results["invariance"]]
    return pd.DataFrame(rows, columns=["model", "condition", "Spearman vs aligned"])


def difference_table(results: dict) -> pd.DataFrame:
    """The paired differences (a - b in pAUC; below 0: a is better), with intervals and verdicts."""
    differences = results.get("differences")
    if not differences:
        return pd.DataFrame()
    level = results["bootstrap"]["level"]
    rows = [[d["a"], d["b"], d["condition"], f"{d['fmr']:g}", f"{d['limit']:g}", f"{d['difference']:+.4f}",
             f"[{d['low']:+.4f}, {d['high']:+.4f}]", d["verdict"]] for d in differences]
    return pd.DataFrame(rows, columns=["a", "b", "condition", "FMR", "pAUC@", "a - b", f"{level:.0%} interval",
                                       "verdict"])


def report_tables(results: dict, limits: list[float]) -> list[pd.DataFrame]:
    """The report's tables: pAUC always, invariance and differences when the evaluation has them."""
    return [pauc_table(results, limits)] + [t for t in (invariance_table(results), difference_table(results))
                                            if len(t)]


def markdown_tables(tables: list[pd.DataFrame]) -> str:
    return "\n\n".join(pipe_table(t) for t in tables) + "\n"


def markdown_table(results: dict, limits: list[float]) -> str:
    return markdown_tables(report_tables(results, limits))


def plot_edc(curves: dict, fmr: float, condition: str, models: list[str], limit: float) -> bytes:
    """One PNG: every model's EDC for one condition, plus the theoretical best curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    f0 = None
    for model in models:
        edc = curves[(fmr, condition, model)]
        x = np.append(edc.discard, 1.0)
        y = np.append(edc.fnmr, edc.fnmr[-1])
        ax.step(x, y, where="post", label=f"{model} (pAUC@{limit:g} = {pauc(edc, limit):.4f})")
        f0 = edc.start_fnmr
    if f0 is not None:
        xs = np.linspace(0, 0.99, 400)
        ax.plot(xs, np.maximum(f0 - xs, 0) / (1 - xs), "k:", lw=1, label="theoretical best")
    ax.set_xlim(0, max(0.5, limit))
    ax.set_xlabel("fraction of mated comparisons discarded (lowest quality first)")
    ax.set_ylabel(f"FNMR at FMR = {fmr:g}")
    ax.set_title(f"EDC, condition: {condition}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _bootstrap_note(results: dict) -> str:
    b = results.get("bootstrap")
    if not b:
        return ""
    return (f" Intervals in brackets: {b['level']:.0%}, from {b['resamples']} resamples of the "
            f"{b['identities']} identities (comparisons of one person are resampled together). A difference is "
            f"called better or worse only when its interval excludes 0.")


def _rejects_note(results: dict) -> str:
    if not results.get("rejected"):
        return ""
    reasons = html.escape(", ".join(f"{k}: {v}" for k, v in sorted(results["reject_reasons"].items())))
    return f" ({results['rejected']} of {results['rows']} rows rejected: {reasons}; see _rejects.parquet)"


def html_page(results: dict, tables: list[pd.DataFrame], images: list[tuple[str, str]]) -> str:
    tables = "".join(html_table(t) for t in tables)
    registered = "".join(f"<li>{html.escape(m['field'])}: {html.escape(m['uri'])} = "
                         f"{html.escape(m['resolved_uri'])}</li>" for m in results.get("registered_models", []))
    registered = f"<p>Registered models used:</p><ul>{registered}</ul>" if registered else ""
    figures = "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>" for name, caption in images)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>aikd evaluation</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}"
            f"td,th{{border:1px solid #ccc;padding:3px 8px}}figure{{display:inline-block;margin:1em}}</style></head>"
            f"<body><h1>FIQA evaluation</h1><p>{results['faces']} faces{_rejects_note(results)}, "
            f"{results['mated_pairs']} mated and "
            f"{results['non_mated_pairs']} non-mated comparisons; EDC mode {results['mode']}, pair quality "
            f"{results['pair_quality']}. Lower pAUC is better.{_bootstrap_note(results)}</p>{registered}"
            f"{tables}{figures}"
            f"</body></html>")


def write_report(cfg: EvaluateConfig, results: dict, curves: dict) -> dict:
    out = resolve(cfg.out)
    tables = report_tables(results, cfg.pauc_limits)
    table = markdown_tables(tables)
    images = []
    for fmr in cfg.fmr:
        for condition in results["conditions"]:
            name = f"edc_{condition}_fmr{fmr:g}.png"
            out.join(name).write_bytes(plot_edc(curves, fmr, condition, results["models"], cfg.pauc_limits[0]))
            images.append((name, f"{condition}, FMR {fmr:g}"))
    out.join("pauc.md").write_text(table)
    out.join("report.json").write_text(json.dumps(results, indent=2) + "\n")
    out.join("index.html").write_text(html_page(results, tables, images))
    return {"report": out.join("index.html").uri, "table": table, "images": [out.join(n).uri for n, _ in images]}

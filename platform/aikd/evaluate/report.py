"""The evaluation job (``aikd evaluate``) and its report: pAUC tables, EDC plots, one HTML page.

    faces -> score_faces (Ray Data: crops per condition, FR embeddings, FIQA qualities)
          -> pairs (built from subject ids, or a pairs file)
          -> per FMR, condition and model: EDC, pAUC at each limit (raw and minus the best curve)
          -> invariance: Spearman of each model's aligned vs other-condition scores
          -> report.json, pauc.md, edc_<condition>_fmr<f>.png, index.html under ``out``,
             and _rejects.parquet: the rows not used, with a reason (rows = faces + rejected)

Models may be registered versions (``models:/name@alias``): the report names the
version each resolved to, and each evaluated student version gets its pAUC per
condition as version tags. The job is an MLflow run with the pAUCs as metrics and the
report as artifacts.
"""

from __future__ import annotations

import html
import io
import json

import numpy as np

from aikd.config import EvaluateConfig
from aikd.data.shards import write_rejects
from aikd.evaluate.bootstrap import Bootstrap, differences, interval
from aikd.evaluate.edc import EDC, edc_fixed, edc_reestimated, pair_qualities, pauc
from aikd.evaluate.pairs import Pairs, build_pairs, comparison_scores, read_pairs
from aikd.evaluate.ranks import spearman
from aikd.evaluate.scoring import score_faces
from aikd.job import SUMMARY_FILE, finish
from aikd.registry import resolve_models, tag_version
from aikd.runtime import ensure_ray
from aikd.storage import resolve
from aikd.tracking import Tracker, job_run, metric_key, tracking_uri


def edc_for(cfg: EvaluateConfig, scores: np.ndarray, quality: np.ndarray, pairs: Pairs, fmr: float) -> EDC:
    q = pair_qualities(quality[pairs.a], quality[pairs.b], cfg.pair_quality)
    m = pairs.mated
    if cfg.mode == "fixed":
        return edc_fixed(scores[m], q[m], scores[~m], fmr)
    return edc_reestimated(scores[m], q[m], scores[~m], q[~m], fmr)


def evaluate(cfg: EvaluateConfig, faces: dict[str, np.ndarray], samples: dict | None = None) -> tuple[dict, dict]:
    """(results as plain data, EDC curves keyed (fmr, condition, model)) from scored faces.

    ``samples``, when given, receives each pAUC per resample, keyed (model, condition,
    fmr, limit): what a caller needs to compare models beyond ``compare`` (e.g. averaged
    over seeds) on the same resamples.
    """
    ids, subjects = faces["image_id"], faces["subject_id"]
    pairs = read_pairs(cfg.pairs_file, ids) if cfg.pairs_file else build_pairs(
        subjects, cfg.max_mated, cfg.non_mated, cfg.seed)
    names = [c.name for c in cfg.conditions]  # display names key the scored columns and the report
    models = [m.name for m in cfg.models]
    results = {"faces": int(len(ids)), "mated_pairs": pairs.n_mated, "non_mated_pairs": int(len(pairs) - pairs.n_mated),
               "mode": cfg.mode, "pair_quality": cfg.pair_quality, "conditions": names, "models": models,
               "pauc": [], "invariance": [], "start_fnmr": {}}
    curves = {}
    samples = {} if samples is None else samples
    boot = Bootstrap.of(pairs, subjects, cfg.ci_resamples, cfg.seed) if cfg.ci_resamples else None
    if boot:
        results["bootstrap"] = {"resamples": cfg.ci_resamples, "unit": "identity", "identities": boot.who.identities,
                                "level": cfg.ci_level}
    for condition in names:
        scores = comparison_scores(faces[f"emb__{condition}"], pairs)
        for fmr in cfg.fmr:
            thresholds = boot.thresholds(scores, fmr) if boot else None
            for model in models:
                quality = faces[f"q__{model}__{condition}"]
                edc = edc_for(cfg, scores, quality, pairs, fmr)
                curves[(fmr, condition, model)] = edc
                results["start_fnmr"][f"{condition}@{fmr:g}"] = edc.start_fnmr
                row = {"model": model, "condition": condition, "fmr": fmr, "start_fnmr": edc.start_fnmr}
                q = pair_qualities(quality[pairs.a], quality[pairs.b], cfg.pair_quality) if boot else None
                for limit in cfg.pauc_limits:
                    row[f"pauc_{limit:g}"] = pauc(edc, limit)
                    row[f"pauc_{limit:g}_minus_best"] = pauc(edc, limit, subtract_best=True)
                    if boot:
                        samples[(model, condition, fmr, limit)] = boot.paucs(scores, q, thresholds, limit)
                        row[f"pauc_{limit:g}_ci"] = list(interval(samples[(model, condition, fmr, limit)],
                                                                  cfg.ci_level))
                results["pauc"].append(row)
    results["differences"] = differences(cfg.compare, results["pauc"], samples, cfg.pauc_limits, cfg.ci_level)
    for model in models:
        base = faces[f"q__{model}__aligned"]
        for condition in names[1:]:  # names[0] is aligned
            results["invariance"].append({"model": model, "condition": condition,
                                          "spearman_vs_aligned": spearman(base, faces[f"q__{model}__{condition}"])})
    return results, curves


def reject_counts(faces: dict[str, np.ndarray], rejects: list[tuple[str, str]]) -> dict:
    """Rows read, faces used, rows rejected and the count per reason (the text before any ' (')."""
    reasons: dict[str, int] = {}
    for _, why in rejects:
        key = why.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    used = int(len(faces["image_id"]))
    return {"rows": used + len(rejects), "faces": used, "rejected": len(rejects), "reject_reasons": reasons}


def markdown_table(results: dict, limits: list[float]) -> str:
    head = ["model", "condition", "FMR", "FNMR@0"] + [f"pAUC@{lim:g}" for lim in limits] + [
        f"pAUC@{lim:g} - best" for lim in limits]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["pauc"]:
        cells = [r["model"], r["condition"], f"{r['fmr']:g}", f"{r['start_fnmr']:.4f}"]
        cells += [_with_interval(r[f"pauc_{lim:g}"], r.get(f"pauc_{lim:g}_ci")) for lim in limits]
        cells += [f"{r[f'pauc_{lim:g}_minus_best']:.4f}" for lim in limits]
        lines.append("| " + " | ".join(cells) + " |")
    inv = ["", "| model | condition | Spearman vs aligned |", "|---|---|---|"]
    inv += [f"| {r['model']} | {r['condition']} | {r['spearman_vs_aligned']:.3f} |" for r in results["invariance"]]
    return "\n".join(lines + (inv if results["invariance"] else []) + difference_table(results)) + "\n"


def _with_interval(value: float, ci: list[float] | None) -> str:
    return f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def difference_table(results: dict) -> list[str]:
    """Lines of the paired differences (a - b in pAUC; below 0: a is better), with intervals and verdicts."""
    if not results.get("differences"):
        return []
    level = results["bootstrap"]["level"]
    lines = ["", f"| a | b | condition | FMR | pAUC@ | a - b | {level:.0%} interval | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for d in results["differences"]:
        lines.append(f"| {d['a']} | {d['b']} | {d['condition']} | {d['fmr']:g} | {d['limit']:g} | "
                     f"{d['difference']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | {d['verdict']} |")
    return lines


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


def html_page(results: dict, table_md: str, images: list[tuple[str, str]]) -> str:
    tables = "".join("<table>" + "".join(  # one HTML table per Markdown table (blocks between blank lines)
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>"
        for line in block.splitlines() if line.startswith("|") and not line.startswith("|---")) + "</table>"
        for block in table_md.split("\n\n") if block.strip())
    registered = "".join(f"<li>{html.escape(m['field'])}: {html.escape(m['uri'])} = "
                         f"{html.escape(m['resolved_uri'])}</li>" for m in results.get("registered_models", []))
    registered = f"<p>Registered models used:</p><ul>{registered}</ul>" if registered else ""
    figures = "".join(f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>" for name, caption in images)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>aikd evaluation</title>"
            f"<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}"
            f"td{{border:1px solid #ccc;padding:3px 8px}}figure{{display:inline-block;margin:1em}}</style></head>"
            f"<body><h1>FIQA evaluation</h1><p>{results['faces']} faces{_rejects_note(results)}, "
            f"{results['mated_pairs']} mated and "
            f"{results['non_mated_pairs']} non-mated comparisons; EDC mode {results['mode']}, pair quality "
            f"{results['pair_quality']}. Lower pAUC is better.{_bootstrap_note(results)}</p>{registered}"
            f"{tables}{figures}"
            f"</body></html>")


def write_report(cfg: EvaluateConfig, results: dict, curves: dict) -> dict:
    out = resolve(cfg.out)
    table = markdown_table(results, cfg.pauc_limits)
    images = []
    for fmr in cfg.fmr:
        for condition in results["conditions"]:
            name = f"edc_{condition}_fmr{fmr:g}.png"
            out.join(name).write_bytes(plot_edc(curves, fmr, condition, results["models"], cfg.pauc_limits[0]))
            images.append((name, f"{condition}, FMR {fmr:g}"))
    out.join("pauc.md").write_text(table)
    out.join("report.json").write_text(json.dumps(results, indent=2) + "\n")
    out.join("index.html").write_text(html_page(results, table, images))
    return {"report": out.join("index.html").uri, "table": table, "images": [out.join(n).uri for n, _ in images]}


def pauc_metrics(results: dict, limits: list[float]) -> dict[str, float]:
    """Flat metric names for tracking: ``pauc_<limit>.<model>.<condition>.fmr<f>``, invariance, differences."""
    out = {}
    for r in results["pauc"]:
        for limit in limits:
            out[metric_key(f"pauc_{limit:g}", r["model"], r["condition"], f"fmr{r['fmr']:g}")] = r[f"pauc_{limit:g}"]
    for r in results["invariance"]:
        out[metric_key("spearman_vs_aligned", r["model"], r["condition"])] = r["spearman_vs_aligned"]
    for d in results["differences"]:
        for field in ("difference", "low", "high"):
            out[metric_key(f"pauc_{d['limit']:g}_{field}", f"{d['a']} - {d['b']}", d["condition"],
                           f"fmr{d['fmr']:g}")] = d[field]
    return out


def tag_evaluated_versions(cfg: EvaluateConfig, models: list[dict], results: dict, tracker: Tracker | None) -> None:
    """Each registered student that was evaluated carries its pAUC per condition (first limit) as version tags."""
    limit = cfg.pauc_limits[0]
    for ref in models:
        parts = ref["field"].split(".")
        if parts[0] != "models" or parts[-1] != "student":
            continue
        name = cfg.models[int(parts[1])].name
        tags = {f"eval.pauc_{limit:g}.{r['condition']}.fmr{r['fmr']:g}": f"{r[f'pauc_{limit:g}']:.5f}"
                for r in results["pauc"] if r["model"] == name}
        tags |= {"eval.faces": results["faces"], "eval.shards": ", ".join(cfg.shards), "eval.report": cfg.out,
                 "eval.run": tracker.run_id if tracker else None}
        tag_version(ref, {k: v for k, v in tags.items() if v is not None}, tracking_uri(cfg.tracking))


def run_evaluate(cfg: EvaluateConfig, samples: dict | None = None) -> dict:
    """Score, compare, report.

    Rerun contract: recompute. Scoring every face under every condition is the job's
    whole cost and its inputs (models, faces) may have changed, so a rerun scores again
    and overwrites the report (and records a new MLflow run); nothing partial is kept
    between runs.
    """
    ensure_ray()
    out = resolve(cfg.out)
    cfg, models = resolve_models(cfg, out)
    with job_run(cfg, out.name, inputs={"shards": cfg.shards, "fr_model": cfg.fr_model},
                 outputs={"report": out.uri}) as tracker:
        faces, rejects = score_faces(cfg)
        results, curves = evaluate(cfg, faces, samples)
        results |= reject_counts(faces, rejects)
        write_rejects(out.uri, rejects)
        results["registered_models"] = [{k: m[k] for k in ("field", "uri", "resolved_uri")} for m in models]
        written = write_report(cfg, results, curves)
        summary = finish(out, {
            "job": "evaluate", "report": written["report"], "faces": results["faces"],
            **{k: results[k] for k in ("rows", "rejected", "reject_reasons")},
            "mated_pairs": results["mated_pairs"], "non_mated_pairs": results["non_mated_pairs"],
            "pauc": results["pauc"], "invariance": results["invariance"], "bootstrap": results.get("bootstrap"),
            "differences": results["differences"], "table": written["table"],
            "models": models, "mlflow_run": tracker.run_id if tracker else None})
        if tracker is not None:
            tracker.log_metrics(pauc_metrics(results, cfg.pauc_limits))
            names = [SUMMARY_FILE, "report.json", "pauc.md", "index.html"] + [u.rsplit("/", 1)[-1]
                                                                               for u in written["images"]]
            tracker.log_outputs(out, names, "report")
        tag_evaluated_versions(cfg, models, results, tracker)
    return summary

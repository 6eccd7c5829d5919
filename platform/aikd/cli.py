"""``aikd <job> ...``: one sub-command per job kind.

Errors a user can cause (:class:`aikd.errors.AikdError`) end in one line naming what to
fix, exit status 2, as do storage errors that retries did not cure (``OSError``: wrong
credentials, a bucket gone); anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from aikd.errors import AikdError, ConfigError

VERBOSE_HELP = "print Ray's own output too (its workers' lines, plans, internals); also AIKD_VERBOSE=1"


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other user error (the usage is in --help). A job command's
    --help ends with its spec's fields."""

    spec_kind: str | None = None

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        text = super().format_help()
        if self.spec_kind is None:
            return text
        from aikd.fields import fields_help, job_spec

        return f"{text}\n{fields_help(job_spec(self.spec_kind))}\n"


@contextlib.contextmanager
def _progress(stage: str, unit: str, total: int | None):
    """An ``advance(n)`` callback: a live bar on a terminal; nothing where stderr is a file or a pipe, whose
    reader gets the summary and, on a user error, its one line."""
    from aikd.console import terminal

    if not terminal().isatty():
        yield lambda n: None
        return
    from aikd.progress import Progress

    with Progress(stage, unit, total, live=True) as shown:
        yield shown.advance


def _cmd_synth(args: argparse.Namespace) -> dict:
    from aikd.data.synth import SynthConfig, write_synthetic

    try:
        cfg = SynthConfig(identities=args.identities, samples_per_identity=args.samples_per_identity,
                          seed=args.seed, degraded_share=args.degraded_share,
                          min_canvas=args.min_canvas, max_canvas=args.max_canvas)
    except ValueError as err:
        raise ConfigError(f"synth: {err}") from None
    with _progress("synth", "faces", cfg.total) as advance:
        return write_synthetic(args.out, cfg, rows_per_shard=args.rows_per_shard, progress=advance)


def run_spec(kind: str | None, spec: str, overrides: dict) -> dict:
    """Validate a job spec and run it; ``kind`` None reads the spec's own ``job:`` field."""
    from aikd.spec import load_spec

    job = _job(kind, spec)
    return job.run(load_spec(spec, job.spec, overrides))


def _job(kind: str | None, spec: str):
    """The job kind given, or the one the spec's ``job:`` field names."""
    from aikd.jobs import KINDS, job_kind
    from aikd.spec import read_spec

    if kind is None:
        kind = read_spec(spec)[0].get("job")
        if kind not in KINDS:
            raise ConfigError(f"{spec}: field 'job' must be one of {sorted(KINDS)}, got {kind!r}")
    return job_kind(kind)


def _cmd_job(args: argparse.Namespace) -> dict | None:
    """The job's own last line names its summary file; --json prints the summary itself (for scripts)."""
    from aikd.spec import parse_overrides

    summary = run_spec(args.kind, args.spec, parse_overrides(args.set))
    return summary if args.json else None


def _cmd_submit(args: argparse.Namespace) -> dict:
    from aikd.spec import load_spec, parse_overrides
    from aikd.submit import submit

    job = _job(None, args.spec)  # a bad spec is refused here, not after it reached the cluster
    load_spec(args.spec, job.spec, parse_overrides(args.set))
    return submit(args.spec, address=args.address, overrides=args.set or [], wait=not args.no_wait)


def _cmd_models(args: argparse.Namespace):
    from aikd import registry
    from aikd.config import TrackingConfig
    from aikd.tracking import tracking_uri

    uri = tracking_uri(TrackingConfig(uri=args.tracking_uri))
    if args.action == "list":
        return registry.list_models(uri)
    if args.action == "show":
        return registry.show(args.ref, uri)
    if args.action == "promote":
        return registry.promote(args.name, args.version, args.alias, uri)
    return registry.pull(args.ref, args.out, uri)


def _cmd_spec(args: argparse.Namespace) -> None:
    from aikd.fields import commented_spec, job_spec
    from aikd.jobs import HELP

    print(commented_spec(args.kind, job_spec(args.kind), HELP[args.kind]), end="")


def _cmd_components(args: argparse.Namespace) -> None:
    from aikd.components import describe_components, render_components

    print(render_components(describe_components()))


def _cmd_demo(args: argparse.Namespace) -> None:
    import ray

    from aikd.demo import run_demo

    sizes = {"identities": args.identities, "samples_per_identity": args.samples_per_identity}
    result = run_demo(args.out, **{k: v for k, v in sizes.items() if v is not None})
    ray.shutdown()  # flush and stop the workers' log forwarding before the summary
    print(f"\npAUC@0.2 (lower is better) per condition, FMR and model:\n{result['overview']}")
    print("\nverdict, the student against its teacher (pAUC@0.2, lower is better):")
    print("\n".join(result["verdict"]))
    registered = result["registered"]
    print(f"\nreport (every table, EDC plots): {result['report']}  ({result['minutes']} min)")
    print(f"student: {registered['uri']} (aliases: {', '.join(registered['aliases'])}), "
          f"tracked at {result['tracking_uri']}; browse it with `make mlflow-ui`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aikd", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate synthetic faces as shards")
    p.add_argument("--out", required=True, help="output URI (s3://bucket/prefix, file:// or a path)")
    p.add_argument("--identities", type=int, default=200)
    p.add_argument("--samples-per-identity", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--degraded-share", type=float, default=0.4)
    p.add_argument("--min-canvas", type=int, default=160)
    p.add_argument("--max-canvas", type=int, default=250)
    p.add_argument("--rows-per-shard", type=int, default=2000)
    p.set_defaults(func=_cmd_synth)

    from aikd.jobs import HELP

    for kind, text in [*HELP.items(), ("run", "run any job spec by its 'job:' field (what an executable spec calls)")]:
        job = sub.add_parser(kind, help=text)
        job.spec_kind = None if kind == "run" else kind
        job.add_argument("spec", help=f"job spec YAML (see jobs/; `aikd spec {kind}` prints one to start from)"
                         if kind != "run" else "job spec YAML (see jobs/)")
        job.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec field, e.g. epochs=3")
        job.add_argument("--json", action="store_true", help="print the job's summary as JSON at the end")
        job.set_defaults(func=_cmd_job, kind=None if kind == "run" else kind)

    sb = sub.add_parser("submit", help="submit a job spec to a Ray cluster (Ray's job submission client)")
    sb.add_argument("spec", help="job spec YAML inside the working directory (uploaded)")
    sb.add_argument("--address", default=None, help="dashboard address (default: RAY_ADDRESS or 127.0.0.1:8265)")
    sb.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec field")
    sb.add_argument("--no-wait", action="store_true", help="return once submitted")
    sb.set_defaults(func=_cmd_submit)

    models = sub.add_parser("models", help="registered models in MLflow: list, show, promote, pull").add_subparsers(
        dest="action", required=True)
    ml = models.add_parser("list", help="registered models with their latest version and aliases")
    ms = models.add_parser("show", help="a model's versions, or one version: NAME, NAME/VERSION or NAME@ALIAS")
    ms.add_argument("ref")
    mp = models.add_parser("promote", help="point ALIAS (e.g. production) at VERSION")
    mp.add_argument("name")
    mp.add_argument("version")
    mp.add_argument("alias")
    mg = models.add_parser("pull", help="download a version's files: NAME/VERSION or NAME@ALIAS")
    mg.add_argument("ref")
    mg.add_argument("--out", required=True, help="directory URI to write (model.safetensors, card.json, ...)")
    for q in (ml, ms, mp, mg):
        q.add_argument("--tracking-uri", default=None,
                       help="default: MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db")
        q.set_defaults(func=_cmd_models)

    s = sub.add_parser("spec", help="print a complete spec of a job kind, every field at its default, commented")
    s.add_argument("kind", choices=sorted(HELP))
    s.set_defaults(func=_cmd_spec)

    c = sub.add_parser("components", help="the backbones, heads and teachers a spec can name, with what they take")
    c.set_defaults(func=_cmd_components)

    d = sub.add_parser("demo", help="the main job on the embedded default (local, CPU only)")
    d.add_argument("--out", default="runs/demo", help="run URI")
    d.add_argument("--identities", type=int, default=None, help="default: the embedded default's")
    d.add_argument("--samples-per-identity", type=int, default=None, help="default: the embedded default's")
    d.set_defaults(func=_cmd_demo)
    for command in sub.choices.values():  # `aikd distill spec.yaml --verbose` as well as `aikd --verbose ...`
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def _error(args: argparse.Namespace, text: str) -> int:
    """A user-fixable error as one line on stderr, credentials masked; exit status 2."""
    from aikd.redact import redact_text

    message = " ".join(line.strip() for line in text.splitlines() if line.strip())  # one line, always
    print(f"aikd {args.command}: error: {redact_text(message)}", file=sys.stderr)  # logs keep no credentials
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        from aikd.console import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # read where Ray starts, and by the processes a job starts
    try:
        result = args.func(args)
    except AikdError as err:
        return _error(args, str(err))
    except OSError as err:  # permanent after retries: credentials refused, a bucket gone, a disk full
        return _error(args, f"storage: {err}")
    if result is not None:
        from aikd.redact import redact

        print(json.dumps(redact(result), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

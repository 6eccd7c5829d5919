"""MLflow's Model Registry for aikd models: ``models:/`` URIs in specs, registering, aliases, pulls.

A registered version is a folder of plain files: ``model.safetensors`` and ``card.json``
(what :func:`aikd.models.weights.load_model` reads), ``spec.yaml`` (the job spec that
made it, credentials masked) and, for a student, ``model.onnx`` (aligned crop in,
embedding and quality out). Nothing in it is a pickle, and aikd reads only those files.

A spec may name a model as ``models:/<name>/<version>`` or ``models:/<name>@<alias>``
wherever it takes a model directory. The driver pins each to one version before any
worker starts (:func:`resolve_models`), so an alias moved mid-job changes nothing, and
hands the workers a URI they can read on any node: the version's own files when they
lie on disk or S3, else a copy under the job's output (a tracking server that proxies
its artifacts).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import yaml

from aikd.config import JobSpec, RegisterConfig
from aikd.errors import AikdError, ConfigError
from aikd.models.weights import CARD_FILE, SPEC_FILE, WEIGHTS_FILE, check_onnx, export_onnx, load_model
from aikd.redact import redact, redact_text
from aikd.retry import Policy, growing
from aikd.spec import PLAIN_NAME, validate
from aikd.storage import Location, resolve
from aikd.tracking import Tracker, client, tracking_uri

SCHEME = "models:/"
PACKAGE = "model"  # artifact path of a version's files inside the run that registered it
ONNX_FILE = "model.onnx"
MODELS_DIR = "_models"  # copies of registered versions under a job's output
ONNX_TOLERANCE = 1e-4
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))")


class RegistryError(AikdError):
    """A model URI the registry cannot resolve, or a registration that failed a check."""


@dataclass(frozen=True)
class ModelRef:
    """One registered version, pinned: ``alias`` is how the spec named it, if by alias."""

    name: str
    version: str
    source: str
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.name}/{self.version}"


def is_model_uri(value) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def parse(uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias) of ``models:/name/version`` or ``models:/name@alias``."""
    m = _URI.fullmatch(uri)
    if m is None:
        raise ConfigError(f"{uri!r}: a registered model is models:/<name>/<version> or models:/<name>@<alias>")
    return m["name"], m["version"], m["alias"]


def _error_message(err) -> str:
    return str(getattr(err, "message", err)).splitlines()[0]


def lookup(uri: str, registry: str) -> ModelRef:
    """Pin a model URI to the version it names now."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse(uri)
    mlflow_client = client(registry)
    try:
        found = (mlflow_client.get_model_version(name, version) if version
                 else mlflow_client.get_model_version_by_alias(name, alias))
    except MlflowException as err:
        raise RegistryError(f"{uri} not found in the registry at {redact_text(registry)}: "
                            f"{_error_message(err)}") from None
    return ModelRef(name, str(found.version), found.source, alias)


def _storage_readable(source: str) -> bool:
    return urlparse(source).scheme in ("", "file", "s3")


DOWNLOAD_ATTEMPTS = 4


def _download_with_retries(ref: ModelRef, registry: str, tmp: str) -> Path:
    """The version's files in ``tmp``, the whole download tried again when the artifact store fails.

    MLflow retries each request, but a download from presigned URLs gives up on a file
    after a run of failed chunks; a registry read is small and idempotent, so it is
    worth a few more whole attempts before the job fails.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    # 4 attempts, 2, 4 and 6 s apart, after any MLflow or I/O error
    policy = Policy(DOWNLOAD_ATTEMPTS, wait=growing(2.0), retryable=lambda e: isinstance(e, (MlflowException, OSError)))

    def fetch() -> Path:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.source, dst_path=tmp, tracking_uri=registry))

    def say(err: BaseException) -> None:
        print(f"registry: downloading {ref.name} version {ref.version} failed ({_error_message(err)}); "
              f"trying again", flush=True)

    try:
        return policy.call(fetch, on_retry=say)
    except (MlflowException, OSError) as err:  # every attempt failed
        raise RegistryError(f"{ref.name} version {ref.version}: download failed {DOWNLOAD_ATTEMPTS} times: "
                            f"{_error_message(err)}") from None


def download(ref: ModelRef, registry: str, dest: Location) -> None:
    """A version's files into ``dest`` (any URI), the card written last: a card means complete."""
    with tempfile.TemporaryDirectory() as tmp:
        local = _download_with_retries(ref, registry, tmp)
        files = sorted((p for p in local.rglob("*") if p.is_file()), key=lambda p: p.name == CARD_FILE)
        for path in files:
            dest.join(*path.relative_to(local).parts).write_bytes(path.read_bytes())


def local_name(text: str) -> str:
    """A registry's name or version as one directory name under the job's output: never '..', '/' or hidden.

    MLflow allows names that are not plain (spaces, '..'); the registry, not the spec,
    chose them, so they are mapped rather than refused, with a hash of the original so
    that two names never share a copy.
    """
    if PLAIN_NAME.fullmatch(text):
        return text
    import hashlib

    return "_" + re.sub(r"[^A-Za-z0-9_.-]", "_", text) + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]


def materialize(ref: ModelRef, registry: str, out: Location) -> str:
    """A URI of the version's files that workers on any node read: the source itself when aikd's
    storage reads it (a path or s3://), else a copy under ``out/_models/<name>/<version>``."""
    if _storage_readable(ref.source):
        return resolve(ref.source).uri
    copy = out.join(MODELS_DIR, local_name(ref.name), local_name(ref.version))
    if not copy.join(CARD_FILE).exists():
        download(ref, registry, copy)
    return copy.uri


def resolve_models(cfg: JobSpec, out: Location) -> tuple[JobSpec, list[dict]]:
    """``cfg`` with every ``models:/`` URI pinned and replaced by a readable URI, and what each became.

    The list (field, uri, name, version, source, resolved) goes into the job's outputs.
    """
    registry = tracking_uri(cfg.tracking)
    found: list[dict] = []

    def walk(node, path: str):
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if not is_model_uri(node):
            return node
        ref = lookup(node, registry)
        readable = materialize(ref, registry, out)
        found.append({"field": path, "uri": node, "resolved_uri": ref.uri} | asdict(ref) | {"files": readable})
        print(f"{cfg.kind}: {path} = {node} -> version {ref.version}", flush=True)
        return readable

    data = walk(cfg.model_dump(mode="json"), "")
    return (validate(type(cfg), data, source="spec with registered models resolved") if found else cfg), found


def _package(model_dir: Location, spec: dict, onnx: bool, into: Path) -> float | None:
    """The version's files in a local folder; the ONNX export is checked against the torch model."""
    for name in (WEIGHTS_FILE, CARD_FILE):
        (into / name).write_bytes(model_dir.join(name).read_bytes())
    (into / SPEC_FILE).write_text(yaml.safe_dump(redact(spec), sort_keys=False))
    if not onnx:
        return None
    model, _ = load_model(str(into))
    export_onnx(model, str(into / ONNX_FILE))
    diff = check_onnx(model, str(into / ONNX_FILE))
    if diff > ONNX_TOLERANCE:
        raise RegistryError(f"the ONNX export of {model_dir.uri} differs from the model by {diff:.2e} "
                            f"(> {ONNX_TOLERANCE:g}): not registered")
    return diff


def register(model_dir: Location, reg: RegisterConfig, tracker: Tracker, *, spec: dict, tags: dict,
             description: str, onnx: bool) -> dict:
    """Log the model's files to the job's run and make them a new version of ``reg.name``; move its aliases."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        onnx_diff = _package(model_dir, spec, onnx, Path(tmp))
        tracker.log_dir(tmp, PACKAGE)
    mlflow_client = tracker.client
    try:
        mlflow_client.create_registered_model(reg.name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":  # another job registered the name first: fine
            raise
    text = description + (f"\n\n{reg.description}" if reg.description else "")
    version = mlflow_client.create_model_version(
        reg.name, f"{tracker.artifact_uri}/{PACKAGE}", run_id=tracker.run_id,
        tags={k: str(v) for k, v in redact(tags).items() if v is not None}, description=redact_text(text)).version
    for alias in reg.aliases:
        mlflow_client.set_registered_model_alias(reg.name, alias, version)
    uri = f"{SCHEME}{reg.name}/{version}"
    tracker.set_tags({"aikd.registered": uri})
    return {"name": reg.name, "version": str(version), "uri": uri, "aliases": list(reg.aliases),
            "onnx_max_abs_diff": onnx_diff}


def tag_version(ref: dict, tags: dict, registry: str) -> None:
    """Add tags (e.g. an evaluation's metrics) to a registered version."""
    mlflow_client = client(registry)
    for key, value in redact(tags).items():
        mlflow_client.set_model_version_tag(ref["name"], ref["version"], key, str(value))


# ------------------------------------------------------------------ `aikd models ...`
def _version_dict(found, aliases: list[str]) -> dict:
    return {"name": found.name, "version": str(found.version), "uri": f"{SCHEME}{found.name}/{found.version}",
            "aliases": aliases, "run_id": found.run_id, "source": found.source, "tags": dict(found.tags),
            "description": found.description, "created_ms": found.creation_timestamp}


def list_models(registry: str) -> list[dict]:
    out = []
    for model in client(registry).search_registered_models():
        latest = max((int(v.version) for v in model.latest_versions), default=None)
        out.append({"name": model.name, "latest_version": latest, "aliases": dict(model.aliases),
                    "description": model.description})
    return out


def show(ref: str, registry: str) -> dict:
    """A registered model (``NAME``: every version) or one version (``NAME/3``, ``NAME@production``)."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(registry)
    if "/" in ref or "@" in ref:
        pinned = lookup(ref if is_model_uri(ref) else SCHEME + ref, registry)
        found = mlflow_client.get_model_version(pinned.name, pinned.version)
        aliases = [a for a, v in mlflow_client.get_registered_model(pinned.name).aliases.items()
                   if str(v) == pinned.version]
        return _version_dict(found, aliases)
    try:
        model = mlflow_client.get_registered_model(ref)
    except MlflowException as err:
        raise RegistryError(f"{ref}: {_error_message(err)}") from None
    by_version: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = mlflow_client.search_model_versions(f"name='{ref}'")
    return {"name": model.name, "description": model.description, "aliases": dict(model.aliases),
            "versions": [_version_dict(v, by_version.get(str(v.version), []))
                         for v in sorted(versions, key=lambda v: int(v.version))]}


def promote(name: str, version: str, alias: str, registry: str) -> dict:
    """Point ``alias`` at ``version`` (it leaves whichever version held it)."""
    before = None
    try:
        before = lookup(f"{SCHEME}{name}@{alias}", registry).version
    except RegistryError:
        pass
    target = lookup(f"{SCHEME}{name}/{version}", registry)
    client(registry).set_registered_model_alias(name, alias, target.version)
    return {"name": name, "alias": alias, "version": target.version, "previous_version": before}


def pull(ref: str, out: str, registry: str) -> dict:
    """A version's files into ``out`` (any URI)."""
    pinned = lookup(ref if is_model_uri(ref) else SCHEME + ref, registry)
    dest = resolve(out)
    download(pinned, registry, dest)
    return {"name": pinned.name, "version": pinned.version, "uri": pinned.uri, "out": dest.uri,
            "files": sorted(f.name for f in dest.list_files())}

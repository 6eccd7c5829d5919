"""The cluster files (cluster/) fit the GPU job specs (jobs/*_gpu.yaml), the image and the project.

Nothing here starts Ray or reaches a network. Specs are validated with the project's own
loader, config classes and CLI parser; the launcher config with Ray's autoscaler; resources
are compared as numbers, worker by worker, against the nodes each cluster file declares.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from aikd.cli import build_parser
from aikd.config import DistillConfig, JobSpec, Resources, ScoreConfig, SweepConfig
from aikd.errors import ConfigError
from aikd.jobs import KINDS, job_kind
from aikd.spec import load_spec, parse_overrides, validate
from aikd.sweep.space import check_space, load_base

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
AWS = CLUSTER / "aws-gpu.yaml"
GPU_SPECS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "jobs").glob("*_gpu.yaml"))
KUBERAY = sorted(p.relative_to(REPO).as_posix() for p in (CLUSTER / "kuberay").glob("*.yaml"))
RAYJOBS = [p for p in KUBERAY if Path(p).name.startswith("rayjob-")]
JOB_CLASSES = {kind: job_kind(kind).spec for kind in KINDS}
SHEBANG = "#!/usr/bin/env -S python -m aikd run"
# what AWS sells (vCPUs, GPUs): a node type may not declare more than its instance has
INSTANCES = {"m6i.2xlarge": (8, 0), "m6i.4xlarge": (16, 0), "g5.12xlarge": (48, 4), "g5.48xlarge": (192, 8),
             "p4d.24xlarge": (96, 8), "p5.48xlarge": (192, 8)}


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch):
    monkeypatch.chdir(REPO)  # specs name each other (a sweep's base) relative to the repository root


def _docs(path: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / path).read_text()) if d is not None]


# ---- job specs -------------------------------------------------------------------------------------------------

def load_job(spec: str, kind: str | None = None, overrides: dict | None = None) -> JobSpec:
    """A spec as `aikd <kind>` / `aikd run` would load it; a sweep's base and space are checked too."""
    assert (REPO / spec).is_file(), f"{spec} does not exist"
    kind = kind or yaml.safe_load((REPO / spec).read_text())["job"]
    cfg = load_spec(spec, JOB_CLASSES[kind], overrides or {})
    if isinstance(cfg, SweepConfig):
        base = sweep_base(cfg)
        check_space(base.model_dump(mode="json"), cfg.space or {}, [base.data.label], cfg.start_with)
    return cfg


def sweep_base(cfg: SweepConfig) -> DistillConfig:
    """The distill spec a trial starts from: the base with the sweep's `fixed` fields."""
    return validate(DistillConfig, {"name": "trial", "storage": cfg.storage} | load_base(cfg), source="sweep base")


def need(res: Resources) -> dict[str, float]:
    """What one worker or actor asks Ray for."""
    out = {"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker}
    return out | dict(getattr(res, "custom", {}) or {})


def bundles(cfg: JobSpec) -> list[dict[str, float]]:
    """Every worker and actor one run (one trial, for a sweep) holds at once."""
    if isinstance(cfg, DistillConfig):
        return [need(cfg.resources)] * cfg.resources.workers + [need(cfg.data.resources)] * cfg.data.resources.workers
    if isinstance(cfg, ScoreConfig):
        return [need(cfg.resources)] * cfg.resources.workers + [need(cfg.decode)] * cfg.decode.workers
    if isinstance(cfg, SweepConfig):
        return [need(cfg.resources)] + bundles(sweep_base(cfg))
    raise AssertionError(f"no resource model for {type(cfg).__name__}")


# ---- commands --------------------------------------------------------------------------------------------------

def shell_segments(command: str) -> list[list[str]]:
    """A shell command's simple commands (split at ``&&``, ``||``, ``;``, ``|``, ``&``), as words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split, lexer.commenters = True, "#"
    segments: list[list[str]] = [[]]
    for token in lexer:
        segments.append([]) if token in {"&&", "||", ";", "|", "&"} else segments[-1].append(token)
    return [seg for seg in segments if seg]


def spec_runs(command: str) -> list:
    """The `aikd` invocations in a shell command that run a spec, parsed by aikd's own CLI parser.

    Covers `aikd <job>|run|submit spec`, `python -m aikd run spec` and `ray job submit ... -- spec`
    (an executable spec runs `python -m aikd run spec ...`).
    """
    runs = []
    for seg in shell_segments(command):
        while seg and re.fullmatch(r"[A-Z_]+=.*", seg[0]):
            seg = seg[1:]  # VAR=value before the command
        if seg[:3] == ["ray", "job", "submit"] and "--" in seg:
            entry = seg[seg.index("--") + 1:]
            args = ["run", *entry] if entry and entry[0].endswith((".yaml", ".yml")) else None
            if args is None and "aikd" in entry:
                args = entry[entry.index("aikd") + 1:]
        elif seg[:1] == ["aikd"] or seg[:3] == ["python", "-m", "aikd"]:
            args = seg[seg.index("aikd") + 1:]
        else:
            continue
        if not args or args[0] not in {*JOB_CLASSES, "run", "submit"}:
            continue  # aikd models, aikd ingest, ...: no spec
        try:
            runs.append(build_parser().parse_args(args))
        except SystemExit:
            pytest.fail(f"aikd's parser refuses {shlex.join(args)!r} (from: {command})")
    return runs


def validated(run) -> JobSpec:
    """The spec an invocation runs, loaded with its --set overrides."""
    return load_job(run.spec, getattr(run, "kind", None), parse_overrides(run.set))


def readme_commands() -> list[str]:
    """The shell commands of cluster/README.md's sh blocks, continuation lines joined, heredoc bodies left out."""
    commands, block, heredoc, pending = [], False, None, ""
    for line in (CLUSTER / "README.md").read_text().splitlines():
        if line.startswith("```"):
            block = line.strip() == "```sh"
            continue
        if not block:
            continue
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command, pending = pending + line, ""
        if m := re.search(r"<<'?(\w+)'?", command):
            heredoc = m.group(1)
        commands.append(command)
    return commands


# ---- clusters --------------------------------------------------------------------------------------------------

def prepared_aws() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(AWS.read_text()))
    validate_config(config)
    return config


def k8s_quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ray_group(spec: dict) -> dict[str, float]:
    """What a KubeRay group's pod offers Ray: its container limits, unless rayStartParams say otherwise."""
    container = spec["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    params = spec.get("rayStartParams") or {}
    out = {"CPU": k8s_quantity(params.get("num-cpus", limits.get("cpu", 0))),
           "GPU": k8s_quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}
    return out | json.loads(params.get("resources", "{}").strip("'\""))


def ray_cluster_specs() -> dict[str, dict]:
    """Every KubeRay cluster shape: the RayCluster, and each RayJob's own rayClusterSpec."""
    out = {}
    for path in KUBERAY:
        for doc in _docs(path):
            if doc.get("kind") == "RayCluster":
                out[path] = doc["spec"]
            elif doc.get("kind") == "RayJob":
                out[path] = doc["spec"]["rayClusterSpec"]
    return out


def nodes(cluster: str) -> list[dict[str, float]]:
    """The nodes of a cluster file at its largest: what each offers Ray, one dict per node."""
    if cluster == "cluster/aws-gpu.yaml":
        config = prepared_aws()
        out, workers = [], 0
        for name, node_type in config["available_node_types"].items():
            count = 1 if name == config["head_node_type"] else min(node_type["max_workers"],
                                                                    config["max_workers"] - workers)
            workers += 0 if name == config["head_node_type"] else count
            out += [dict(CPU=0, GPU=0) | {k: float(v) for k, v in node_type["resources"].items()}] * count
        return out
    spec = ray_cluster_specs()[cluster]
    out = [ray_group(spec["headGroupSpec"])]
    for group in spec["workerGroupSpecs"]:
        count = group["maxReplicas"] if spec.get("enableInTreeAutoscaling") else group["replicas"]
        out += [ray_group(group)] * count
    return out


def unplaced(needs: list[dict[str, float]], offer: list[dict[str, float]]) -> list[dict[str, float]]:
    """First-fit of workers (largest first) onto nodes; what finds no node. A worker never spans nodes."""
    free = [dict(n) for n in offer]
    left = []
    for want in sorted(needs, key=lambda w: (w.get("GPU", 0), w.get("CPU", 0)), reverse=True):
        node = next((n for n in free if all(n.get(k, 0) + 1e-9 >= v for k, v in want.items() if v)), None)
        if node is None:
            left.append(want)
        else:
            for k, v in want.items():
                node[k] = node.get(k, 0) - v
    return left


CLUSTERS = ["cluster/aws-gpu.yaml", *sorted(ray_cluster_specs())]


# ---- the image -------------------------------------------------------------------------------------------------

def dockerfile() -> dict:
    """cluster/Dockerfile's instructions, ARGs expanded: base image, RUN commands in order, COPY, WORKDIR."""
    lines, pending = [], ""
    for raw in (CLUSTER / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    out = {"from": [], "run": [], "copy": [], "workdir": None, "order": []}

    def expand(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)

    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), expand(rest.strip())
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default or args.get(name, "")
        elif word == "FROM":
            out["from"].append(rest)
        elif word == "WORKDIR":
            out["workdir"] = rest
        elif word in ("RUN", "COPY"):
            out[word.lower()].append(rest)
        out["order"].append((word, rest))
    out["args"] = args
    return out


def pip_installs(run: str) -> list[tuple[list[str], dict[str, str]]]:
    """Each `pip install` of a RUN line: its requirements and its options."""
    out = []
    for tokens in shell_segments(run):
        if "pip" not in tokens or "install" not in tokens:
            continue
        tokens = tokens[tokens.index("install") + 1:]
        reqs, options, i = [], {}, 0
        while i < len(tokens):
            if tokens[i] in ("--index-url", "--extra-index-url", "-i"):
                options[tokens[i]] = tokens[i + 1]
                i += 2
                continue
            if not tokens[i].startswith("-"):
                reqs.append(tokens[i])
            i += 1
        out.append((reqs, options))
    return out


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def project_requirement(name: str) -> Requirement:
    return next(r for r in map(Requirement, pyproject()["project"]["dependencies"]) if r.name == name)


def image_ray_version() -> str:
    base = dockerfile()["from"][0]
    m = re.fullmatch(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d)(?P<minor>\d+)-(gpu|cu\d+)", base)
    assert m, f"the image must start from Ray's own GPU image, rayproject/ray:<version>-py3XX-gpu; got {base}"
    return m["ray"]


# ---- tests: the specs --------------------------------------------------------------------------------------------

def test_there_are_gpu_specs_for_distill_sweep_and_score():
    """Each GPU job the cluster README walks through has its spec."""
    kinds = {yaml.safe_load((REPO / s).read_text())["job"] for s in GPU_SPECS}
    assert {"distill", "sweep", "score"} <= kinds, GPU_SPECS


@pytest.mark.parametrize("spec", GPU_SPECS)
def test_a_gpu_spec_is_executable_and_validates_with_the_projects_loader(spec):
    """`ray job submit -- jobs/x_gpu.yaml` runs the spec itself: the shebang, the run bit, a valid spec."""
    path = REPO / spec
    assert path.read_text().splitlines()[0] == SHEBANG
    assert path.stat().st_mode & 0o111, f"{spec} has no run bit"
    cfg = load_job(spec)
    assert any(w["GPU"] > 0 for w in bundles(cfg)), f"{spec} asks for no GPU"


def test_a_sweep_trial_keeps_its_bases_global_batch():
    """A trial on fewer GPUs accumulates micro-batches, so the winner's recipe runs unchanged on the base."""
    for spec in GPU_SPECS:
        cfg = load_job(spec)
        if not isinstance(cfg, SweepConfig):
            continue
        trial, base = sweep_base(cfg), load_job(cfg.base)

        def batch(c: DistillConfig) -> int:
            return c.engine.micro_batch * c.engine.grad_accum * c.resources.workers

        assert batch(trial) == batch(base), (spec, batch(trial), batch(base))
        assert base.resources.gpus_per_worker >= 1 and trial.resources.gpus_per_worker >= 1


def test_gpu_scoring_runs_torch_on_gpu_actors_and_decodes_on_cpus():
    cfg = load_job("jobs/score_gpu.yaml")
    assert cfg.resources.gpus_per_worker >= 1 and cfg.backend in ("auto", "torch")
    assert cfg.decode.gpus_per_worker == 0 and cfg.decode.workers >= cfg.resources.workers


# ---- tests: commands that run specs ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RAYJOBS)
def test_a_rayjob_runs_a_spec_that_validates_and_deletes_its_cluster(path):
    (job,) = _docs(path)
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    (run,) = spec_runs(spec["entrypoint"])
    validated(run)
    assert run.spec in GPU_SPECS
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])  # a YAML string, as KubeRay takes it
    assert isinstance(spec["runtimeEnvYAML"], str) and isinstance(runtime_env, dict)
    # the entrypoint's relative spec path (and a sweep's base) resolve in the repository the image holds
    assert runtime_env["working_dir"] == dockerfile()["workdir"]


def test_every_spec_the_cluster_readme_runs_exists_and_validates():
    runs = [run for command in readme_commands() for run in spec_runs(command)]
    for run in runs:
        validated(run)
    assert {run.spec for run in runs} >= set(GPU_SPECS), "the walk-through submits every GPU spec"


def test_every_cluster_file_the_readme_names_exists():
    text = (CLUSTER / "README.md").read_text()
    named = set(re.findall(r"cluster/[\w./-]+\.(?:yaml|md)|cluster/Dockerfile", text))
    assert named and all((REPO / p).is_file() for p in named), sorted(p for p in named if not (REPO / p).is_file())


def test_a_sweep_the_readme_widens_fits_the_clusters_it_runs_on():
    """`--set concurrency=K` in the README: K trials must fit the long-lived clusters at their largest."""
    for run in (r for c in readme_commands() for r in spec_runs(c)):
        cfg = validated(run)
        if isinstance(cfg, SweepConfig) and cfg.concurrency:
            for cluster in ("cluster/aws-gpu.yaml", "cluster/kuberay/raycluster.yaml"):
                assert unplaced(bundles(cfg) * cfg.concurrency, nodes(cluster)) == [], (cluster, cfg.concurrency)


# ---- tests: the clusters -----------------------------------------------------------------------------------------

def test_the_aws_config_passes_the_autoscalers_own_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepared_aws()
    assert config["provider"]["type"] == "aws"
    broken = yaml.safe_load(AWS.read_text())
    broken["available_node_types"]["gpu"]["min_worker"] = 1  # the same check refuses a misspelt key
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(copy.deepcopy(broken)))


def test_aws_node_types_state_resources_their_instances_have():
    config = prepared_aws()
    for name, node_type in config["available_node_types"].items():
        instance = node_type["node_config"]["InstanceType"]
        assert instance in INSTANCES, f"{name}: add {instance}'s vCPUs and GPUs to INSTANCES"
        cpus, gpus = INSTANCES[instance]
        res = node_type["resources"]
        assert "CPU" in res, f"{name}: state its resources, so no EC2 lookup decides them"
        assert res["CPU"] <= cpus and res.get("GPU", 0) <= gpus, (name, res, instance)
        assert "IamInstanceProfile" in node_type["node_config"], f"{name}: S3 access comes from an instance profile"


def test_every_node_starts_ray_with_token_authentication():
    config = prepared_aws()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert any(Path(remote).as_posix().endswith("/.ray") for remote in config["file_mounts"]), \
        "the token reaches ~/.ray/auth_token on every node"
    for path, spec in ray_cluster_specs().items():
        assert spec["authOptions"]["mode"] == "token", path


def test_the_head_takes_no_work():
    """Workers, actors and trials go to the GPU nodes; the head keeps the GCS and the drivers."""
    config = prepared_aws()
    assert config["available_node_types"][config["head_node_type"]]["resources"]["CPU"] == 0
    for path, spec in ray_cluster_specs().items():
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", path


@pytest.mark.parametrize("path", sorted(ray_cluster_specs()))
def test_kuberay_gpu_groups_ask_for_gpus_in_requests_and_limits(path):
    spec = ray_cluster_specs()[path]
    assert str(spec["rayVersion"]) == image_ray_version()
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        gpus = {k: resources[k].get("nvidia.com/gpu") for k in ("requests", "limits")}
        assert gpus["limits"] and int(gpus["limits"]) > 0 and gpus["requests"] == gpus["limits"], (path, gpus)
        assert resources["requests"]["cpu"] == resources["limits"]["cpu"], path


@pytest.mark.parametrize("cluster", CLUSTERS)
@pytest.mark.parametrize("spec", GPU_SPECS)
def test_a_gpu_spec_fits_the_cluster(spec, cluster):
    """Every worker and actor of one run (one trial) finds a node, no worker spanning two."""
    work, offer = bundles(load_job(spec)), nodes(cluster)
    for want in {json.dumps(w, sort_keys=True) for w in work}:
        one = json.loads(want)
        assert unplaced([one], offer) == [], f"{spec}: no node of {cluster} holds one worker of {one}"
    assert unplaced(work, offer) == [], f"{spec} needs more than {cluster} has at its largest"


def test_the_fit_check_refuses_what_does_not_fit():
    g5 = [{"CPU": 48.0, "GPU": 4.0}] * 2
    assert unplaced([{"CPU": 1.0, "GPU": 5.0}], g5)                      # a worker never spans nodes
    assert unplaced([{"CPU": 4.0, "GPU": 1.0}] * 9, g5)                   # 9 GPUs on 8
    assert unplaced([{"CPU": 13.0, "GPU": 1.0}] * 4, [{"CPU": 48.0, "GPU": 4.0}])
    assert unplaced([{"CPU": 1.0, "GPU": 0.0, "gpu_node": 0.01}], g5)    # a custom resource no node offers
    with pytest.raises(ConfigError, match="zero_stage"):
        [validated(r) for r in spec_runs("aikd submit jobs/distill_gpu.yaml --set engine.zero_stage=3")]
    with pytest.raises(AssertionError, match="does not exist"):
        [validated(r) for r in spec_runs("ray job submit --working-dir . -- jobs/distill_gpu_typo.yaml")]


@pytest.mark.parametrize("path", ["cluster/aws-gpu.yaml", *KUBERAY])
def test_every_cluster_file_runs_the_projects_image(path):
    version = pyproject()["project"]["version"]
    images = ([prepared_aws()["docker"]["image"]] if path.endswith("aws-gpu.yaml") else
              [c["image"] for doc in _docs(path) for c in _containers(doc)])
    assert images and all(i.rsplit("/", 1)[-1] == f"aikd:{version}" for i in images), (path, images)


def _containers(node) -> list[dict]:
    if isinstance(node, dict):
        found = list(node["containers"]) if isinstance(node.get("containers"), list) else []
        return found + [c for v in node.values() for c in _containers(v)]
    if isinstance(node, list):
        return [c for v in node for c in _containers(v)]
    return []


def test_every_file_under_cluster_is_one_this_module_checks():
    known = {"aws-gpu.yaml", "Dockerfile", "Dockerfile.dockerignore", "README.md"}
    for path in CLUSTER.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(REPO).as_posix()
        if path.suffix == ".yaml":
            docs = _docs(rel)  # parses
            assert docs, rel
            assert rel == "cluster/aws-gpu.yaml" or all("apiVersion" in d and "kind" in d for d in docs), rel
        else:
            assert path.name in known, f"{rel}: a file the tests here do not check"


# ---- tests: the image --------------------------------------------------------------------------------------------

def test_the_image_runs_the_ray_the_project_requires_and_the_client_has():
    import ray

    version = image_ray_version()
    assert Version(version) in project_requirement("ray").specifier, (version, str(project_requirement("ray")))
    assert version == ray.__version__, "a job client and its cluster must run the same Ray"
    m = re.search(r"-py(\d)(\d+)-", dockerfile()["from"][0])
    assert Version(f"{m[1]}.{m[2]}") in SpecifierSet(pyproject()["project"]["requires-python"])


def test_the_image_installs_a_cuda_torch_in_the_projects_range_before_the_project():
    image = dockerfile()
    installs = [(i, reqs, opts) for i, run in enumerate(image["run"]) for reqs, opts in pip_installs(run)]
    torch = [(i, Requirement(r), opts) for i, reqs, opts in installs for r in reqs if re.match(r"torch\b", r)]
    assert len(torch) == 1, "one pinned torch install"
    at, requirement, options = torch[0]
    (pinned,) = [s.version for s in requirement.specifier if s.operator == "=="]
    assert Version(pinned) in project_requirement("torch").specifier
    makefile = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (REPO / "Makefile").read_text(), re.M)[1]
    assert pinned == makefile, "the image runs the torch the test suite runs"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", options.get("--index-url", "")), options
    project = [i for i, reqs, _ in installs if "." in reqs or image["workdir"] in reqs]
    assert project and project[0] > at, "the project is installed (`pip install .`), after torch"
    copies = [i for i, (word, rest) in enumerate(image["order"]) if word == "COPY" and rest.split()[-2:] == [".", "."]]
    runs = [i for i, (word, _) in enumerate(image["order"]) if word == "RUN"]
    assert copies and copies[0] < runs[project[0]], "the repository is copied in before it is installed"


def test_the_images_build_context_leaves_out_local_state():
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "runs", ".git"} <= set(ignored)

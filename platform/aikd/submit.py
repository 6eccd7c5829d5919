"""``aikd submit``: send a job spec to a Ray cluster through Ray's job submission client.

The working directory is uploaded (Ray skips what .gitignore lists) and the cluster runs
``python -m aikd run <spec>``, the same command an executable spec runs under
``ray job submit --working-dir . -- jobs/x.yaml``. Ray 2.60 clusters use token
authentication: when ``RAY_AUTH_MODE`` is unset and ``~/.ray/auth_token`` exists (where
``ray start`` writes it), token mode is switched on for this client. A tracking server
named in this shell's ``MLFLOW_TRACKING_URI`` is passed on to the job's environment.
"""

from __future__ import annotations

import os
import shlex
import time

from aikd.errors import ConfigError, JobFailed

TOKEN_FILE = os.path.expanduser("~/.ray/auth_token")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
FORWARDED = ("MLFLOW_TRACKING_URI",)  # where the job is tracked: the submitter's choice, not the head node's


def enable_token_auth() -> bool:
    if os.environ.get("RAY_AUTH_MODE"):
        return os.environ["RAY_AUTH_MODE"] == "token"
    if os.path.exists(TOKEN_FILE) or os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_MODE"] = "token"
        return True
    return False


def entrypoint(spec: str, overrides: list[str]) -> str:
    args = ["python", "-m", "aikd", "run", spec]
    for override in overrides:
        args += ["--set", override]
    return shlex.join(args)


def runtime_env(working_dir: str) -> dict:
    env = {"working_dir": working_dir}
    forwarded = {k: os.environ[k] for k in FORWARDED if os.environ.get(k)}
    return env | ({"env_vars": forwarded} if forwarded else {})


def submit(spec: str, address: str | None = None, overrides: list[str] = (), wait: bool = True,
           working_dir: str = ".", poll_s: float = 2.0) -> dict:
    if not os.path.exists(os.path.join(working_dir, spec)):
        raise ConfigError(f"job spec {spec} not found under the working directory {os.path.abspath(working_dir)}")
    enable_token_auth()
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint(spec, list(overrides)), runtime_env=runtime_env(working_dir))
    print(f"aikd submit: job {job_id} on {address}", flush=True)
    if not wait:
        return {"job_id": job_id, "status": "SUBMITTED"}
    shown = 0
    while True:
        status = str(client.get_job_status(job_id).value)
        logs = client.get_job_logs(job_id)
        print(logs[shown:], end="", flush=True)
        shown = len(logs)
        if status in TERMINAL:
            break
        time.sleep(poll_s)
    if status != "SUCCEEDED":
        raise JobFailed(f"job {job_id} ended {status}; its log is above")
    return {"job_id": job_id, "status": status}

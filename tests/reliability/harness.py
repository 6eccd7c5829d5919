"""Helpers of the reliability suite: jobs as CLI processes, reading S3 past the proxy, its figures."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import boto3
import psutil
import pytest

BUCKET = "aikd-test"
FIGURES: dict[str, dict] = {}  # job -> requests and injected faults, for docs/reliability.md


def s3_direct(s3_server):
    """A client that bypasses the proxy: what the test itself reads to check results."""
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


def s3_keys(s3_server, prefix: str) -> list[str]:
    pages = s3_direct(s3_server).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


class Job:
    """One CLI job in its own process group, its output collected line by line."""

    def __init__(self, args: list[str], env: dict, cwd: str):
        self.args = args
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "aikd", *args], env=env, cwd=cwd, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 240) -> re.Match:
        """The first output line matching ``pattern`` (fails if the job ends or time runs out first)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if match := regex.search(line):
                    return match
            seen = len(self.lines)
            if self.proc.poll() is not None:
                self._reader.join(5)
                if any(regex.search(line) for line in self.lines):
                    return next(m for line in self.lines if (m := regex.search(line)))
                pytest.fail(f"job ended (rc {self.proc.returncode}) before {pattern!r}:\n{self.output[-3000:]}")
            time.sleep(0.1)
        pytest.fail(f"no {pattern!r} within {timeout} s:\n{self.output[-3000:]}")

    def until(self, condition, timeout: float = 240, every: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"job ended (rc {self.proc.returncode}) early:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"condition not met within {timeout} s:\n{self.output[-3000:]}")
            time.sleep(every)

    def kill_driver(self) -> None:
        """SIGKILL the driver, as a lost head node or an OOM kill would; then reap its Ray processes."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.kill()
        self.proc.wait(30)
        for child in children:  # Ray's own processes die with their driver; anything left is reaped
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reader.join(5)

    def finish(self, timeout: float = 400) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_driver()
            pytest.fail(f"job did not end within {timeout} s:\n{self.output[-3000:]}")
        self._reader.join(10)
        return rc

    def succeed(self, timeout: float = 400) -> str:
        rc = self.finish(timeout)
        assert rc == 0, f"{self.args} failed (rc {rc}):\n{self.output[-4000:]}"
        return self.output


def write_images(s3_server, prefix: str, identities: int, per_identity: int, seed: int) -> list[str]:
    """Synthetic face images and their landmarks CSV under ``prefix`` (written past the proxy)."""
    from aikd.data.synth import SynthConfig, generate_rows

    client = s3_direct(s3_server)
    rows = list(generate_rows(SynthConfig(identities=identities, samples_per_identity=per_identity, seed=seed)))
    lines = []
    for row in rows:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/images/{row['image_id']}", Body=row["image"])
        lines.append(",".join([row["image_id"], *map(str, row["landmarks"])]))
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/landmarks.csv", Body="\n".join(lines).encode())
    return sorted(row["image_id"] for row in rows)


def delta(before: dict, after: dict, job: str | None = None) -> dict:
    """Requests and injected faults between two readings of the proxy's figures (kept under ``job``)."""
    figures = {"requests": after["requests"] - before["requests"],
               "faults": sum(after["faults"].values()) - sum(before["faults"].values())}
    if job is not None:
        FIGURES[job] = figures
    return figures

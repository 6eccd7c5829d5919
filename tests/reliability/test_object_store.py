"""Object store faults: transient ones are retried through, permanent ones end a job at once in one line.

Transient faults (500, 503, SlowDown, connections dropped before or after the store
acted) hit 10 % of the requests of every job in this suite and of the killed sweep
(tests/sweep); here: the ingest. The other results (labels, checkpoints, registry,
scores) are checked where they are made (test_driver_crash, test_worker_loss).
"""

import pytest
from harness import BUCKET, delta, s3_direct

from aikd.data.shards import read_rejects, read_shards, read_summary


def test_ingest_through_faults_keeps_every_image_byte_for_byte(faces, s3_server):
    shards, ids, traffic = faces
    table = read_shards(shards)
    assert sorted(table["image_id"].to_pylist()) == ids
    client = s3_direct(s3_server)
    for image_id, blob in zip(table["image_id"].to_pylist(), table["image"].to_pylist(), strict=True):
        assert blob == client.get_object(Bucket=BUCKET, Key=f"reliability/images/{image_id}")["Body"].read()
    assert read_summary(shards)["rows"] == len(ids) and read_rejects(shards).num_rows == 0
    assert traffic["faults"] > 0


def _one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in output, output[-3000:]
    return errors[0]


@pytest.mark.parametrize("where", ["images", "output"])
def test_a_bucket_that_is_gone_ends_the_job_in_one_line(where, faces, run_job, proxy):
    gone = "s3://aikd-gone/reliability"
    source = gone if where == "images" else f"s3://{BUCKET}/reliability"
    before = proxy.figures()
    job = run_job(["ingest"], {"job": "ingest", "images": f"{source}/images", "landmarks": f"{source}/landmarks.csv",
                               "out": f"{gone}/faces" if where == "output" else f"s3://{BUCKET}/reliability/never"})
    assert job.finish(120) == 2
    assert "aikd-gone" in _one_error_line(job.output)
    assert delta(before, proxy.figures())["requests"] < 400  # no retry storm: a missing bucket is not retried


def test_wrong_credentials_end_the_job_in_one_line(faces, run_job, fr_run):
    spec = {"job": "label", "shards": [faces[0]], "out": f"s3://{BUCKET}/reliability/denied",
            "teachers": [{"name": "norm", "options": {"model": fr_run[0].out}}]}
    job = run_job(["label"], spec, env={"AWS_ACCESS_KEY_ID": "AKIANOTAKEY", "AWS_SECRET_ACCESS_KEY": "not-a-secret"})
    assert job.finish(120) == 2
    line = _one_error_line(job.output)
    assert "InvalidAccessKeyId" in line or "ACCESS_DENIED" in line
    assert "not-a-secret" not in job.output

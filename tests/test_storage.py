import pickle

import pyarrow.fs as pafs
import pytest

from aikd.storage import StorageError, resolve


def test_plain_path_and_file_uri_are_local(tmp_path):
    plain = resolve(str(tmp_path / "a"))
    as_uri = resolve(f"file://{tmp_path}/a")
    assert isinstance(plain.fs, pafs.LocalFileSystem)
    assert plain.path == as_uri.path == str(tmp_path / "a")


def test_s3_uri_maps_to_bucket_path(s3_server):
    loc = resolve("s3://bucket/some/prefix/")
    assert isinstance(loc.fs, pafs.S3FileSystem)
    assert loc.path == "bucket/some/prefix"
    assert loc.join("x.parquet").uri == "s3://bucket/some/prefix/x.parquet"


def test_endpoint_comes_from_aws_endpoint_url(s3_server, monkeypatch):
    # pyarrow's S3FileSystem() alone would ignore the variable and go to AWS.
    loc = resolve("s3://aikd-test/endpoint-check")
    loc.join("probe.txt").write_text("hello")
    import boto3

    body = boto3.client("s3", endpoint_url=s3_server).get_object(Bucket="aikd-test", Key="endpoint-check/probe.txt")
    assert body["Body"].read() == b"hello"


@pytest.mark.parametrize("bad", ["", "s3://", "gs://bucket/x", "http://host/x"])
def test_bad_uris_name_the_problem(bad):
    with pytest.raises(StorageError) as err:
        resolve(bad)
    assert "URI" in str(err.value) or "bucket" in str(err.value)


def test_round_trip_and_listing(storage_root):
    root = resolve(storage_root)
    root.join("b/2.bin").write_bytes(b"two")
    root.join("a.bin").write_bytes(b"one")
    root.join("_hidden.json").write_text("{}")
    files = root.list_files(suffix=".bin")
    assert [f.uri.rsplit("/", 1)[-1] for f in files] == ["a.bin", "2.bin"]
    assert files[0].read_bytes() == b"one"
    assert root.join("a.bin").exists() and not root.join("nope").exists()


def test_listing_a_missing_prefix_is_a_clear_error(storage_root):
    with pytest.raises(StorageError, match="nothing at"):
        resolve(storage_root).join("missing").list_files()


def test_small_objects_are_read_whole_through_transient_store_faults(s3_server, monkeypatch):
    """A 500 or 503 whose XML body is larger than the object is not retried by the S3 client itself."""
    from fault_proxy import FaultProxy

    target = resolve("s3://aikd-test/storage/tiny.json")
    target.write_text('{"run_id": "abc"}')
    proxy = FaultProxy(s3_server, rate=0.3, seed=4).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        through_faults = resolve(target.uri)
        assert all(through_faults.read_json() == {"run_id": "abc"} for _ in range(20))
        assert sum(proxy.figures()["faults"].values()) > 0
    finally:
        proxy.stop()


def test_the_s3_clients_retries_do_not_run_out_in_a_long_job_in_any_process(s3_server, monkeypatch):
    """A job makes thousands of requests; under a fault rate the client must keep retrying them all
    (the SDK's "standard" strategy stops retrying once about 100 retries have drained its quota). Ray
    Train's controller and workers get the client pickled: the copy keeps retrying too (pyarrow's own
    pickling drops the retry strategy, and such a copy failed this test)."""
    from fault_proxy import FaultProxy

    resolve("s3://aikd-test/storage/long.json").write_json({})
    proxy = FaultProxy(s3_server, rate=0.3, seed=7).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        target = resolve("s3://aikd-test/storage/long.json")
        sent = pickle.loads(pickle.dumps(target.fs))  # as another process rebuilds it
        assert type(sent) is type(target.fs) and sent.retries == target.fs.retries
        for _ in range(600):  # the client's own retries only: no whole-request policy around this call
            assert sent.get_file_info(target.path).type == pafs.FileType.File
        assert sum(proxy.figures()["faults"].values()) > 150
    finally:
        proxy.stop()


def test_lookups_and_listings_go_through_transient_store_faults(s3_server, monkeypatch):
    """The S3 client's own retries draw on a quota that a long run under faults empties; then a HEAD
    answered by a bodiless 503 fails at once. Lookups are tried again as whole requests."""
    from fault_proxy import FaultProxy

    for k in range(3):
        resolve(f"s3://aikd-test/storage/looked/{k}.json").write_json({"k": k})
    proxy = FaultProxy(s3_server, rate=0.1, seed=6).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setattr("aikd.storage.S3_RETRIES", 1)  # a client whose retries are spent
        root = resolve("s3://aikd-test/storage/looked")
        for _ in range(10):
            assert root.join("1.json").exists() and not root.join("9.json").exists()
            assert [loc.name for loc in root.list_files(".json")] == ["0.json", "1.json", "2.json"]
        assert sum(proxy.figures()["faults"].values()) > 0
    finally:
        proxy.stop()


def test_whole_objects_are_written_through_transient_store_faults(s3_server, monkeypatch):
    """The S3 client does not retry every failed write (a 503 SlowDown completing an upload): the write is."""
    from fault_proxy import FaultProxy

    proxy = FaultProxy(s3_server, rate=0.3, seed=5).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        for k in range(8):
            resolve(f"s3://aikd-test/storage/written/{k}.json").write_json({"k": k})
        assert sum(proxy.figures()["faults"].values()) > 0
    finally:
        proxy.stop()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # read back past the proxy
    assert [resolve(f"s3://aikd-test/storage/written/{k}.json").read_json() for k in range(8)] == [
        {"k": k} for k in range(8)]

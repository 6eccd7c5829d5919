"""Whole-operation retries: the policy, and the two operations that use it (S3 object reads, model downloads).

Each case spells out what the hand-written loops did: the attempts, the waits between them, which
errors earn another attempt and which error the caller finally sees.
"""

import io

import pytest

from aikd import registry, storage
from aikd.retry import Policy, doubling, growing
from aikd.storage import Location


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The waits asked for, none of them waited."""
    waited: list[float] = []
    monkeypatch.setattr("aikd.retry.time.sleep", waited.append)
    return waited


def flaky(errors: list[BaseException], result="done"):
    """A callable that raises ``errors`` in turn, then returns ``result``; ``.calls`` counts the attempts."""
    def fn():
        fn.calls += 1
        if errors:
            raise errors.pop(0)
        return result

    fn.calls = 0
    return fn


POLICY = Policy(attempts=4, wait=doubling(0.5), retryable=lambda e: isinstance(e, KeyError))


def test_a_retryable_error_is_tried_again_until_the_operation_succeeds(sleeps):
    fn, heard = flaky([KeyError(1), KeyError(2)]), []
    assert POLICY.call(fn, on_retry=heard.append) == "done"
    assert fn.calls == 3 and sleeps == [0.5, 1.0] and [e.args for e in heard] == [(1,), (2,)]


def test_the_last_attempts_error_reaches_the_caller_unchanged(sleeps):
    last = KeyError("fourth")
    fn = flaky([KeyError(1), KeyError(2), KeyError(3), last])
    with pytest.raises(KeyError) as caught:
        POLICY.call(fn)
    assert caught.value is last and fn.calls == 4 and len(sleeps) == 3


def test_an_error_the_policy_does_not_name_is_never_tried_again(sleeps):
    fn = flaky([ValueError("bad")])
    with pytest.raises(ValueError, match="bad"):
        POLICY.call(fn)
    assert fn.calls == 1 and sleeps == []


@pytest.mark.parametrize("wait, slept_after", [
    (doubling(0.5), lambda attempt: 0.25 * 2**attempt),  # storage's loop: 0.5, 1, 2 s
    (growing(2.0), lambda attempt: 2.0 * attempt),  # the registry's loop: 2, 4, 6 s
])
def test_the_waits_are_the_ones_the_loops_slept(sleeps, wait, slept_after):
    Policy(4, wait, lambda e: True).call(flaky([KeyError()] * 3))
    assert sleeps == [slept_after(attempt) for attempt in (1, 2, 3)]


class FlakyFS:
    """A filesystem whose reads raise ``errors`` in turn, then return ``b"data"``."""

    def __init__(self, errors: list[BaseException]):
        self.errors, self.calls = list(errors), 0

    def open_input_stream(self, path: str):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return io.BytesIO(b"data")


TRANSIENT = OSError("When reading: AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush")


def _location(monkeypatch, errors: list[BaseException], s3: bool = True) -> tuple[Location, FlakyFS]:
    fs = FlakyFS(errors)
    monkeypatch.setattr(Location, "is_s3", property(lambda self: s3))
    return Location(fs, "bucket/key.json", "s3://bucket/key.json"), fs


def test_s3_reads_retry_transient_errors_four_attempts_in_all(monkeypatch, sleeps):
    location, fs = _location(monkeypatch, [TRANSIENT] * 3)
    assert location.read_bytes() == b"data" and fs.calls == 4 and sleeps == [0.5, 1.0, 2.0]
    assert storage.S3_WHOLE_OBJECTS.attempts == storage.READ_ATTEMPTS == 4


def test_an_s3_read_that_keeps_failing_raises_its_last_os_error(monkeypatch, sleeps):
    last = OSError("AWS Error SLOW_DOWN (HTTP status 503)")
    location, fs = _location(monkeypatch, [TRANSIENT] * 3 + [last])
    with pytest.raises(OSError) as caught:
        location.read_bytes()
    assert caught.value is last and fs.calls == 4


@pytest.mark.parametrize("s3, error", [
    (True, OSError("AWS Error ACCESS_DENIED")),  # not transient: a new request would fail the same way
    (True, FileNotFoundError("bucket/key.json")),
    (False, TRANSIENT),  # local files are never retried
])
def test_other_read_errors_are_raised_at_once(monkeypatch, sleeps, s3, error):
    location, fs = _location(monkeypatch, [error], s3=s3)
    with pytest.raises(OSError) as caught:
        location.read_bytes()
    assert caught.value is error and fs.calls == 1 and sleeps == []


REF = registry.ModelRef("aikd-student", "3", "s3://bucket/models/3")


def _downloads(monkeypatch, errors: list[BaseException], tmp_path):
    fetch = flaky(errors, result=str(tmp_path))
    monkeypatch.setattr("mlflow.artifacts.download_artifacts", lambda **kw: fetch())
    return fetch


def test_a_download_is_tried_again_after_mlflow_or_io_errors(monkeypatch, sleeps, tmp_path, capsys):
    from mlflow.exceptions import MlflowException

    fetch = _downloads(monkeypatch, [MlflowException("chunk failed\ndetails"), OSError("reset")], tmp_path)
    assert registry._download_with_retries(REF, "sqlite:///x.db", str(tmp_path)) == tmp_path
    assert fetch.calls == 3 and sleeps == [2.0, 4.0]
    assert capsys.readouterr().out.splitlines() == [
        "registry: downloading aikd-student version 3 failed (chunk failed); trying again",
        "registry: downloading aikd-student version 3 failed (reset); trying again"]


def test_a_download_that_keeps_failing_is_one_registry_error(monkeypatch, sleeps, tmp_path):
    fetch = _downloads(monkeypatch, [OSError(f"reset {i}") for i in range(4)], tmp_path)
    with pytest.raises(registry.RegistryError) as caught:
        registry._download_with_retries(REF, "sqlite:///x.db", str(tmp_path))
    assert str(caught.value) == "aikd-student version 3: download failed 4 times: reset 3"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # raised "from None"
    assert fetch.calls == registry.DOWNLOAD_ATTEMPTS == 4 and sleeps == [2.0, 4.0, 6.0]


def test_a_download_error_of_another_kind_is_raised_at_once(monkeypatch, sleeps, tmp_path):
    fetch = _downloads(monkeypatch, [ValueError("bad uri")], tmp_path)
    with pytest.raises(ValueError, match="bad uri"):
        registry._download_with_retries(REF, "sqlite:///x.db", str(tmp_path))
    assert fetch.calls == 1 and sleeps == []

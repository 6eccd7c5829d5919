import json
import subprocess
import sys

import pytest

from aikd.cli import main
from aikd.data.shards import read_shards


def test_synth_command_writes_shards_and_prints_the_summary(tmp_path, capsys):
    out = tmp_path / "faces"
    assert main(["synth", "--out", str(out), "--identities", "3", "--samples-per-identity", "4",
                 "--rows-per-shard", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"] == 12 and summary["shards"] == 3
    assert read_shards(str(out)).num_rows == 12


def test_user_errors_are_one_line_not_a_traceback(tmp_path):
    spec = tmp_path / "ingest.yaml"
    spec.write_text(f"job: ingest\nimages: {tmp_path / 'missing'}\nlandmarks: {tmp_path / 'lm.csv'}\n"
                    f"out: {tmp_path / 'o'}\n")
    proc = subprocess.run([sys.executable, "-m", "aikd", "run", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "landmarks file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bug_shows_its_traceback_and_is_not_a_user_error(monkeypatch, capsys):
    import aikd.cli

    def buggy(args):
        return [1, 2][5]  # an IndexError: a bug, not something the user can fix

    monkeypatch.setattr(aikd.cli, "_cmd_synth", buggy)
    with pytest.raises(IndexError):
        main(["synth", "--out", "x"])


def test_a_bad_spec_is_one_line_with_exit_status_2(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("job: distill\nname: n\nstorage: s\nworkers: 3\n")
    assert main(["run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'workers' was renamed: set resources.workers" in err


def test_bad_uri_scheme_is_reported(capsys):
    assert main(["synth", "--out", "gs://bucket/x", "--identities", "1", "--samples-per-identity", "1"]) == 2
    assert "unsupported URI scheme 'gs'" in capsys.readouterr().err

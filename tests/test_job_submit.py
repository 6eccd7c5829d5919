"""`aikd submit` / `ray job submit`: what the job carries to the cluster.

The jobs themselves run through `ray job submit` on a three-node cluster in
tests/test_multinode.py.
"""

from aikd.submit import runtime_env


def test_submitting_passes_the_tracking_server_on(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert runtime_env(".") == {"working_dir": ".", "env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}}

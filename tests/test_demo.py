from aikd.demo import run_demo
from aikd.storage import resolve


def test_demo_runs_the_slice_end_to_end_on_a_tiny_set(ray_local, tmp_path):
    result = run_demo(str(tmp_path / "run"), identities=4, samples_per_identity=6)
    assert result["synth"]["rows"] == 24
    assert 0 < result["pipeline"]["train_pairs"] <= 24 and result["pipeline"]["rejected"] == 0
    assert resolve(result["preview"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

from aikd.demo import run_demo
from aikd.storage import resolve


def test_demo_runs_the_whole_slice_on_a_tiny_default(ray_local, tmp_path):
    logs = []
    result = run_demo(str(tmp_path / "run"), log=logs.append, identities=24, samples_per_identity=6,
                      fr_epochs=1, distill_epochs=1, eval_identities=8)
    assert any("FR pretraining" in line for line in logs) and any("distillation" in line for line in logs)
    page = resolve(result["report"]).read_text()
    assert "edc_misaligned_3_fmr0.001.png" in page and "edc_box_fmr0.01.png" in page
    assert "| AI-KD student (serfiq) | misaligned_3 |" in result["table"]
    assert result["overview"].splitlines()[0] == "| FMR | model | aligned | misaligned_3 | misaligned_6 | box |"
    assert len(result["verdict"]) == 8 and all("its teacher" in line for line in result["verdict"])
    # the student was registered, and the evaluation scored it through its alias
    assert result["registered"]["uri"].startswith("models:/aikd-demo-student/")
    assert "models:/aikd-demo-student@candidate" in page and result["registered"]["uri"] in page
    # a second run finds every stage done and only re-evaluates
    logs.clear()
    run_demo(str(tmp_path / "run"), log=logs.append, identities=24, samples_per_identity=6,
             fr_epochs=1, distill_epochs=1, eval_identities=8)
    assert not any("FR pretraining" in line or "distillation" in line for line in logs)

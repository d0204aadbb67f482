"""Prediction records survive whatever a generated program printed."""

from vinci.eval.records import Prediction, safe_id


def test_lone_surrogate_from_a_program_still_writes_and_reads_back(tmp_path):
    error = 'crash: ValueError: "\ud800" (line 1)'  # what `raise ValueError("\ud800")` reports
    prediction = Prediction(id="a", source="s", language="python", prompt="p", text="t\u00e9", code=None, render_error=error)
    path = tmp_path / "predictions.jsonl"
    with open(path, "w", encoding="utf-8") as handle:  # as the writer opens it
        handle.write(prediction.to_json() + "\n")
    back = Prediction.from_json(path.read_text(encoding="utf-8"))
    assert back.render_error == error and back.text == "t\u00e9"


def test_safe_id_cannot_leave_the_folder():
    assert safe_id("../../etc/passwd") == "etc_passwd"
    assert safe_id("...") == "sample"

"""benchmarks.heldout: evaluates through `main.py predict`, with the reference images' render
options, and prints the per-domain means that `main.py test` logs."""

import json

import pytest

from benchmarks import heldout
from benchmarks.heldout import reference_render_options
from main import cli_main
from vinci.data.synth.corpus import MANIFEST, VERSION
from vinci.eval.module import EvalModule


def test_render_options_come_from_the_corpus_manifest(tmp_path):
    rows = tmp_path / "rl_test.jsonl"
    rows.write_text("")
    assert reference_render_options(rows) is None  # rows outside a corpus: the renderers' defaults
    (tmp_path / MANIFEST).write_text(json.dumps({"version": VERSION, "render_options": {"python_dpi": 50}}))
    assert reference_render_options(rows).python_dpi == 50


def test_a_manifest_of_another_corpus_version_is_an_error_not_the_defaults(tmp_path):
    rows = tmp_path / "rl_test.jsonl"
    rows.write_text("")
    (tmp_path / MANIFEST).write_text(json.dumps({"version": VERSION - 1, "render_options": {"python_dpi": 50}}))
    with pytest.raises(ValueError, match=r"manifest\.json is not a version-\d+ corpus manifest.*rebuild the corpus"):
        reference_render_options(rows)


def half_right(self, batch):
    """Even rows answer with their reference program, odd rows with no code at all."""
    return [answer if i % 2 == 0 else "no code here" for i, answer in enumerate(batch.answers)]


def test_the_table_holds_the_means_main_py_test_logs(tiny_model, tiny_corpus, tmp_path, monkeypatch):
    """One path: the predictions heldout reads back, averaged by `summarise`, give exactly the
    per-domain means that `main.py test` logs on the same config."""
    monkeypatch.setattr(EvalModule, "answer", half_right)
    rows = tiny_corpus / "rl_test.jsonl"
    results, tables = heldout.run({"half": ""}, str(tiny_model), str(rows), 16, 0, 2, out=str(tmp_path))
    n_rows = sum(1 for line in rows.read_text().splitlines() if line.strip())
    assert len(results["half"]) == n_rows and tables["half"]["all"]["n"] == n_rows
    assert 0 < tables["half"]["all"]["render"] < 1  # some rendered, some did not
    assert (tmp_path / "half" / "report.html").is_file() and (tmp_path / "half" / "predictions.jsonl").is_file()

    cli = cli_main(["test", "--config", str(tmp_path / "configs" / "half.yaml"), "--trainer.logger=false"])
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    printed = {f"test/{domain}/{score}": value for domain, means in tables["half"].items()
               for score, value in means.items() if score != "n"}
    assert set(printed) == set(logged)
    for key, value in printed.items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key


def test_command_line_prints_the_table_with_a_progress_bar(tiny_model, tiny_corpus, tmp_path, capsys):
    rows = tiny_corpus / "rl_test.jsonl"
    heldout.main(["--adapters", "base=", "--model", str(tiny_model), "--rows", str(rows), "--max-new-tokens", "8",
                  "--limit", "3", "--samples", "2", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert "Predicting" in captured.out + captured.err  # Lightning's progress bar, once per run
    table = captured.out.splitlines()[-4:]
    assert table[0].split() == ["run", "domain", "n", "format", "render", "visual", "reward"]
    overall = next(line.split() for line in table if line.split()[:2] == ["base", "all"])
    assert overall[2] == "3"  # --limit: the first 3 rows
    for k in range(2):  # --samples 2: two sampled runs, each kept with its report
        assert len(open(tmp_path / f"base-sample{k}" / "predictions.jsonl").readlines()) == 3
        assert (tmp_path / f"base-sample{k}" / "report.html").is_file()


def test_a_missing_adapter_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        heldout.main(["--adapters", f"sft={tmp_path / 'nowhere'}", "--rows", str(tmp_path)])
    assert "no adapter at" in capsys.readouterr().err

"""`main.py test` and `main.py predict` end to end: real rendering, scoring and writing.

The tiny untrained model writes no usable code, so the tests use known answers: the reference
programs themselves (oracle mode: every score must be at its best), or text without code
(format and render must be 0; `EvalModule.answer` replaced). Everything after that
(extraction, sandboxed rendering, call tracing, scoring, metrics, the writer) is the real path.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from main import cli_main
from vinci.eval.module import EvalModule

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ("CB_1", "line_22", "3d_7")  # a bar chart, a line chart and a 3D chart from ChartMimic


def eval_config(tmp_path: Path, tiny_model: Path, **data) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "eval.yaml").read_text())
    config["trainer"].update(logger=False, default_root_dir=str(tmp_path / "root"))
    config["predictions"]["init_args"]["output_dir"] = str(tmp_path / "predict")
    backbone = config["model"]["init_args"]["backbone"]
    backbone.update(model=str(tiny_model), adapter=None, embedded=False)
    config["model"]["init_args"]["max_new_tokens"] = 16
    config["data"].update(data)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(subcommand: str, config: Path, *extra: str):
    cli = cli_main([subcommand, "--config", str(config), *extra])
    return cli.trainer


def test_reference_answers_score_at_the_top(tiny_model, tiny_corpus, tmp_path):
    trainer = run("test", eval_config(tmp_path, tiny_model, synthetic={"dir": str(tiny_corpus)}, batch_size=4),
                  "--model.init_args.oracle=true")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for domain in ("chart", "icon", "all"):
        assert metrics[f"test/{domain}/format"] == 1.0
        assert metrics[f"test/{domain}/render"] == 1.0
        assert metrics[f"test/{domain}/visual"] > 0.99
        assert metrics[f"test/{domain}/ssim"] > 0.98
    for score in ("text_f1", "type_f1", "color_f1", "layout_f1"):
        assert metrics[f"test/chart/{score}"] == pytest.approx(1.0)
        assert f"test/icon/{score}" not in metrics  # chart scores only where they apply


def test_answers_without_code_score_zero(tiny_model, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(EvalModule, "answer", lambda self, batch: ["I cannot draw this."] * len(batch.images))
    trainer = run("test", eval_config(tmp_path, tiny_model, synthetic={"dir": str(tiny_corpus)}, batch_size=4))
    assert not any(p.requires_grad for p in trainer.lightning_module.model.parameters())  # loaded for inference
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for score in ("format", "render", "visual", "ssim", "reward"):
        assert metrics[f"test/all/{score}"] == 0.0
    assert metrics["test/chart/type_f1"] == 0.0


def test_chartmimic_folder_against_itself(corpora, tiny_model, tmp_path):
    """ChartMimic scripts (which save their own PDF) evaluated against themselves (oracle
    mode): every low-level F1 is 1 and the render matches the 100-dpi reference PNG."""
    folder = tmp_path / "charts"
    folder.mkdir()
    for name in CHARTS:
        for ext in (".py", ".png"):
            shutil.copy(corpora / "chart" / f"{name}{ext}", folder)
    config = eval_config(tmp_path, tiny_model, benchmark={"dir": str(folder)}, synthetic=None, batch_size=3,
                         max_pixels=1280 * 28 * 28)  # no synthetic corpus: prepare_data would build one in the repo
    trainer = run("test", config, "--model.init_args.render_options.python_dpi=100", "--model.init_args.oracle=true")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["test/chart/render"] == 1.0
    assert metrics["test/chart/visual"] > 0.95
    for score in ("text_f1", "type_f1", "color_f1", "layout_f1"):
        assert metrics[f"test/chart/{score}"] == pytest.approx(1.0)


def test_predict_writes_predictions_renders_and_report(tiny_model, tiny_corpus, tmp_path, monkeypatch):
    def half_right(self, batch):  # even rows answer with the reference, odd rows with no code
        return [answer if i % 2 == 0 else "no code here" for i, answer in enumerate(batch.answers)]

    monkeypatch.setattr(EvalModule, "answer", half_right)
    run("predict", eval_config(tmp_path, tiny_model, synthetic={"dir": str(tiny_corpus)}, batch_size=4))
    out = tmp_path / "predict"
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    n_rows = sum(1 for _ in open(tiny_corpus / "rl_test.jsonl"))
    assert len(lines) == n_rows and len({line["id"] for line in lines}) == n_rows
    rendered = [line for line in lines if line["render_path"]]
    failed = [line for line in lines if not line["render_path"]]
    assert rendered and failed
    assert all((out / line["render_path"]).is_file() and line["scores"]["render"] == 1.0 for line in rendered)
    assert all(line["code"] is None and line["render_error"] and line["scores"]["reward"] == 0.0 for line in failed)
    assert all((out / line["reference_path"]).is_file() for line in lines)
    report = (out / "report.html").read_text()
    assert report.count("data:image") >= len(rendered) + n_rows  # renders and references embedded


def test_validate_scores_the_validation_split(tiny_model, tiny_corpus, tmp_path):
    trainer = run("validate", eval_config(tmp_path, tiny_model, synthetic={"dir": str(tiny_corpus)}, batch_size=4),
                  "--model.init_args.oracle=true")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["val/all/render"] == 1.0 and metrics["val/chart/type_f1"] == pytest.approx(1.0)


def test_design2code_folder_against_itself(corpora, tiny_model, tmp_path):
    """Design2Code pages (no PNG beside them: the references are rendered) evaluated against
    themselves: Design2Code's low-level scores are logged for the web domain only."""
    folder = tmp_path / "pages"
    folder.mkdir()
    for name in ("4704", "2865"):  # two small pages
        shutil.copy(corpora / "html" / f"{name}.html", folder)
    config = eval_config(tmp_path, tiny_model, benchmark={"dir": str(folder), "references_dir": str(tmp_path / "refs")},
                         synthetic=None, batch_size=2)
    trainer = run("test", config, "--model.init_args.oracle=true", "--model.init_args.render_options.html_width=1280",
                  "--model.init_args.render_options.html_height=720")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["test/web/render"] == 1.0
    for score in ("d2c_block", "d2c_text", "d2c_position", "d2c_color"):
        assert metrics[f"test/web/{score}"] > 0.9
    assert "test/web/text_f1" not in metrics


def test_the_reward_encoder_is_a_child_that_follows_the_module(tiny_model):
    """Evaluation scores with the module's own PatchSimilarity, which Lightning moves with the
    model; a process-wide encoder looked up by name stayed on the CPU, in fp32, beside the GPU."""
    from vinci.backbone import Backbone
    from vinci.eval.module import EvalModule
    from vinci.reward.metric import PatchSimilarity

    module = EvalModule(Backbone(model=str(tiny_model)), encoder="pixel", tile_size=224, max_tiles=4)
    assert isinstance(dict(module.named_children()).get("visual"), PatchSimilarity)
    assert module.visual.options["tile_size"] == 224 and module.visual.options["max_tiles"] == 4
    module.to("meta")  # stands in for the GPU
    assert module.visual.encoder.device.type == "meta"


def test_moving_a_module_moves_only_its_own_encoder():
    """A metric built from a name owns its encoder: the functional path's process-wide encoder
    of that name stays where it is when a module goes to another device."""
    from vinci.reward.encoders import cached_encoder
    from vinci.reward.metric import PatchSimilarity

    shared = cached_encoder("pixel")
    metric = PatchSimilarity(encoder="pixel")
    assert metric.encoder is not shared
    metric.to("meta")
    assert metric.encoder.device.type == "meta" and shared.device.type == "cpu"

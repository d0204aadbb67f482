"""benchmarks/reproduce.py: derived configs write only under --out, parse, and differ only in the reward."""

import sys
from pathlib import Path

import yaml

from main import cli_main
from vinci.eval.records import Prediction

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.reproduce import VARIANTS, format_results, load, retarget  # noqa: E402


def paths_in(config: dict) -> list[str]:
    text = yaml.safe_dump(config)
    return [line.split(": ", 1)[1] for line in text.splitlines() if line.strip().split(":")[0] in ("dirpath", "export_dir", "output_dir", "default_root_dir", "save_dir")]


def test_retargeted_configs_write_only_under_out_and_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    for name in ("sft", "virl", "eval"):
        config = retarget(load(name), out, f"run-{name}")
        assert paths_in(config) and all(p.startswith(str(out)) for p in paths_in(config))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        cli = cli_main(["--config", str(path), "--trainer.accelerator=cpu", "--trainer.logger=false"], run=False)
        assert cli.trainer.default_root_dir == str(out / f"run-{name}")


def test_variants_differ_only_in_the_reward_mix():
    assert VARIANTS == {"virl-c2f": None, "virl-coarse": 1.0, "virl-fine": 0.0}


def test_table_pairs_runs_by_id():
    def preds(rewards):
        return [Prediction(id=f"s{i}", source="", language="svg", prompt="", text="", code=None,
                           scores=dict(format=1.0, render=1.0, visual=r, ssim=r, reward=r)) for i, r in enumerate(rewards)]

    table = format_results({"sft": preds([0.5, 0.6, 0.7, 0.8]), "virl-c2f": preds([0.6, 0.7, 0.8, 0.9])})
    row = next(line for line in table.splitlines() if line.startswith("| virl-c2f"))
    assert "+0.1000 [+0.1000, +0.1000]" in row  # every pair gained exactly 0.1
    assert "0.650" in next(line for line in table.splitlines() if line.startswith("| sft"))

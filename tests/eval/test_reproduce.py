"""benchmarks/reproduce.py: derived configs write only under --out, parse, and differ only in the reward."""

from pathlib import Path

import yaml

from main import cli_main
from vinci.eval.records import Prediction

from benchmarks.reproduce import format_results, load, retarget, virl_config


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


def flatten(value, prefix=""):
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def test_variants_differ_only_in_the_reward_mix(tmp_path):
    """Same SFT start, seed, steps and batches; only global_weight (and output paths) differ."""
    configs = {name: flatten(virl_config(tmp_path, name, "sft-adapter", steps=7)) for name in ("virl-c2f", "virl-coarse", "virl-fine")}
    c2f = configs["virl-c2f"]
    assert c2f[".model.init_args.backbone.adapter"] == "sft-adapter" and c2f[".trainer.max_steps"] == 7
    for name in ("virl-coarse", "virl-fine"):
        differing = {k for k in c2f if c2f[k] != configs[name][k] and str(tmp_path) not in str(c2f[k])
                     and not k.endswith("logger.init_args.name")}
        assert differing == {".model.init_args.global_weight"}
    assert (c2f[".model.init_args.global_weight"], configs["virl-coarse"][".model.init_args.global_weight"],
            configs["virl-fine"][".model.init_args.global_weight"]) == (None, 1.0, 0.0)


def test_table_pairs_runs_by_id():
    def preds(rewards):
        return [Prediction(id=f"s{i}", source="", language="svg", prompt="", text="", code=None,
                           scores=dict(format=1.0, render=1.0, visual=r, ssim=r, reward=r)) for i, r in enumerate(rewards)]

    table = format_results({"sft": preds([0.5, 0.6, 0.7, 0.8]), "virl-c2f": preds([0.6, 0.7, 0.8, 0.9])})
    row = next(line for line in table.splitlines() if line.startswith("| virl-c2f"))
    assert "+0.1000 [+0.1000, +0.1000]" in row  # every pair gained exactly 0.1
    assert "0.650" in next(line for line in table.splitlines() if line.startswith("| sft"))
    table = format_results({"sft": preds([0.5, 0.6]), "virl-c2f": preds([0.6, 0.7]), "virl-fine": preds([0.6, 0.6])})
    row = next(line for line in table.splitlines() if line.startswith("| virl-fine"))
    assert row.rstrip(" |").endswith("-0.0500 [-0.1000, +0.0000]")  # against c2f: 0, then -0.1

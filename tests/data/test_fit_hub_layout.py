"""`main.py fit` with the SFT config pointed at a folder laid out as the hub stores a dataset."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
import yaml

from main import cli_main
from tests.data.conftest import png_bytes, sft_row

ROOT = Path(__file__).resolve().parents[2]


def test_sft_trains_on_a_hub_layout_shard_folder(tmp_path, tiny_model):
    repo = tmp_path / "VinciCoder-mini"
    (repo / "data").mkdir(parents=True)
    rows = [sft_row({"bytes": png_bytes((40 + i, 30), "red"), "path": None}, answer=f"```svg\n<svg id='{i}'/>\n```")
            for i in range(6)]
    for i, shard in enumerate((rows[:3], rows[3:5])):
        datasets.Dataset.from_list(shard).to_parquet(str(repo / "data" / f"train-{i:05d}-of-00002.parquet"))
    datasets.Dataset.from_list(rows[5:]).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))

    config = yaml.safe_load((ROOT / "configs" / "sft.yaml").read_text())
    run = tmp_path / "run"
    trainer = config["trainer"]
    trainer.update(max_steps=2, val_check_interval=2, log_every_n_steps=1, default_root_dir=str(run))
    trainer["logger"]["init_args"]["save_dir"] = str(run)
    groups = [v for v in config.values() if isinstance(v, dict) and "class_path" in v]  # checkpoint, adapter, ...
    for group in groups + trainer.get("callbacks", []):
        args = group.get("init_args", {})
        if "dirpath" in args:
            args["dirpath"] = str(run / Path(args["dirpath"]).name)
    model = config["model"]["init_args"]
    model["backbone"].update(model=str(tiny_model), embedded=False)
    model["show_samples"] = 0
    config["data"].update(synthetic=None, batch_size=2, train=str(repo), val=f"{repo}@test")
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))

    cli = cli_main(["fit", "--config", str(path)])
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert len(cli.datamodule.datasets["train"]) == 5 and len(cli.datamodule.datasets["val"]) == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()

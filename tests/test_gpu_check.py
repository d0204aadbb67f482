"""benchmarks.gpu_check: what each phase changes in its recipe, the local encoder cache, the data
it writes, and the whole script end to end with tiny models on the CPU (--tiny)."""

import json

import pytest
import yaml

from benchmarks import gpu_check, gpu_check_data
from benchmarks.memory_budget import GiB

PATHS = {"sft": "/d/sft.jsonl", "rl": "/d/rl.jsonl", "sft_adapter": "/r/sft/adapter", "adapter": "/r/virl/adapter"}


def derived(phase, model, tmp_path, settings=gpu_check.Settings()):
    overrides = gpu_check.phase_overrides(phase, model, tmp_path / "model", PATHS, tmp_path / "run", settings)
    return yaml.safe_load(gpu_check.phase_config(phase, model, overrides, tmp_path).read_text())


@pytest.mark.parametrize("model", gpu_check.MODELS)
def test_virl_phase_keeps_the_recipes_chunk_and_length_and_plants_answers(model, tmp_path):
    recipe = yaml.safe_load(gpu_check.recipe_path(model, "virl").read_text())
    config = derived("virl", model, tmp_path)
    for key in ("micro_batch_size", "kl_coef", "encoder", "ppo_epochs"):
        assert config["model"]["init_args"][key] == recipe["model"]["init_args"][key]
    chunk = recipe["sampler"]["init_args"]["prompts_per_generation"]  # what sets device memory
    assert config["data"]["batch_size"] == config["sampler"]["init_args"]["prompts_per_generation"] == chunk
    assert config["model"]["init_args"]["backbone"]["quantization"] == recipe["model"]["init_args"]["backbone"]["quantization"]
    sampler = config["sampler"]
    assert sampler["class_path"] == "benchmarks.gpu_check_phase.PlantAnswers"
    assert sampler["init_args"]["num_samples"] == recipe["sampler"]["init_args"]["num_samples"]
    assert sampler["init_args"]["max_new_tokens"] == recipe["sampler"]["init_args"]["max_new_tokens"] == 2048
    assert sampler["init_args"]["min_new_tokens"] == 2048  # every answer as long as a random policy writes it
    assert config["model"]["init_args"]["backbone"]["model"] == str(tmp_path / "model")
    assert config["model"]["init_args"]["backbone"]["adapter"] == PATHS["sft_adapter"]
    assert config["trainer"]["max_steps"] == 2 and config["trainer"]["limit_val_batches"] == 1
    assert config["trainer"]["val_check_interval"] == 2  # one validation pass, after the second step
    assert config["data"]["train"] == config["data"]["val"] == PATHS["rl"]
    assert str(tmp_path / "run") in config["adapter"]["init_args"]["dirpath"]  # nothing written into the repository


def test_sft_test_and_tiny_phases_change_only_what_they_say(tmp_path):
    model = "qwen3-vl-8b"
    sft = derived("sft", model, tmp_path)
    recipe = yaml.safe_load(gpu_check.recipe_path(model, "sft").read_text())
    assert sft["data"]["batch_size"] == recipe["data"]["batch_size"] and sft["data"]["max_length"] == recipe["data"]["max_length"]
    assert sft["trainer"]["max_steps"] == 3 and sft["data"]["val"] is None
    test = derived("test", model, tmp_path)
    assert test["data"]["benchmark"] == {"dir": PATHS["rl"], "kind": "rows", "limit": 4}
    assert test["model"]["init_args"]["max_new_tokens"] == 2048 and test["model"]["init_args"]["backbone"]["adapter"] == PATHS["adapter"]
    tiny = derived("virl", model, tmp_path, gpu_check.Settings.for_mode(tiny=True))
    assert tiny["trainer"]["accelerator"] == "cpu" and tiny["sampler"]["init_args"]["max_new_tokens"] == 4
    assert tiny["model"]["init_args"]["encoder"] == f"timm:{gpu_check.TINY_ENCODER}"
    assert gpu_check.phase_args("export", model, tmp_path, PATHS, tmp_path, gpu_check.Settings())[:3] == [
        "export", "--adapter", PATHS["adapter"]]


def test_hub_cache_holds_random_weights_where_timm_encoder_looks(tmp_path):
    from safetensors.torch import load_file

    from vinci.reward.encoders import TimmEncoder, resolve_weights

    weights = gpu_check_data.fill_hub_cache(tmp_path, gpu_check.TINY_ENCODER)
    assert resolve_weights(gpu_check.TINY_ENCODER, cache_dir=tmp_path) == str(weights)
    encoder = TimmEncoder(gpu_check.TINY_ENCODER, cache_dir=tmp_path)  # no download: allow_download is off
    saved = load_file(str(weights))
    for name, tensor in encoder.model.state_dict().items():
        assert (tensor == saved[name]).all(), name


def test_sft_rows_are_grown_to_the_longest_that_fits(family_models, tmp_path):
    from transformers import AutoProcessor

    from vinci.data.lengths import LengthCheck

    model_dir = family_models("qwen3_vl")
    paths = gpu_check_data.write_rows(tmp_path, model_dir, 32, (4, 4), sft_rows=2, rl_rows=3, max_length=300)
    rows = [json.loads(line) for line in paths["sft"].read_text().splitlines()]
    assert len(rows) == 2 and len(paths["rl"].read_text().splitlines()) == 3
    processor = AutoProcessor.from_pretrained(model_dir)
    check = LengthCheck(processor, "sft", 300)
    lines = rows[0]["messages"][1]["content"].count("ax.annotate")
    assert gpu_check_data.sft_length(processor, check, (128, 128), lines) <= 300
    assert gpu_check_data.sft_length(processor, check, (128, 128), lines + 1) > 300


def test_engines_say_why_vllm_does_not_run(tmp_path):
    assert gpu_check.engines(tmp_path) == {"transformers": None, "vllm": "not set up (no .venv-vllm: make vllm-env)"}
    (tmp_path / ".venv-vllm" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-vllm" / "bin" / "python").write_text("")
    assert gpu_check.engines(tmp_path)["vllm"] is None
    assert "GPU only" in gpu_check.engines(tmp_path, tiny=True)["vllm"]


def test_a_gpu_row_is_judged_by_reserved_plus_context():
    row = {"allocated": 14 * GiB, "reserved": 15 * GiB, "context": 0.7 * GiB, "device": "NVIDIA H100"}
    need = gpu_check.need_of(row)
    assert need.total == pytest.approx(15.7 * GiB) and not need.fits(16) and need.fits(24)
    assert gpu_check.need_of({"reserved": None}) is None  # a CPU run has no CUDA figures


def test_tiny_run_goes_through_every_phase_end_to_end(tmp_path, capsys):
    """The whole script on the CPU: build, data, SFT -> ViRL (planted answer rendered and scored)
    -> test -> export -> reward, each through vinci's command line in its own process."""
    gpu_check.main(["--tiny", "--models", "qwen3-vl-8b", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["phase"] for r in rows] == ["build + data", *gpu_check.PHASES]
    assert not [r for r in rows if "error" in r], [r.get("error") for r in rows]
    assert all(r["device"] == "cpu" and r["reserved"] is None for r in rows[1:])
    runs = tmp_path / "runs"
    assert (runs / "qwen3-vl-8b-sft" / "adapter" / "last" / "adapter_config.json").is_file()
    assert (runs / "qwen3-vl-8b-virl" / "adapter" / "last" / "adapter_config.json").is_file()
    assert (runs / "qwen3-vl-8b-export" / "merged" / "config.json").is_file()
    virl = rows[gpu_check.PHASES.index("virl") + 1]
    assert virl["metrics"]["render/rate"] > 0  # the planted answers rendered ...
    assert virl["metrics"]["reward/visual_mean"] > 0  # ... and the timm encoder scored them
    out = capsys.readouterr().out
    assert "qwen3-vl-8b    | virl" in out and "engine vllm: " in out

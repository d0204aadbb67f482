"""benchmarks.trl_compare and benchmarks.rollout_batch: their table arithmetic, and each one's
smallest configuration end to end, so that a change to the ViRL step cannot leave them broken."""

import importlib.util
import json
import math

import pytest

from benchmarks import planted, rollout_batch, trl_compare

MIB = 2**20


def test_plant_replaces_the_first_answer_of_each_group():
    texts = [f"t{i}" for i in range(6)]  # 3 prompts x G = 2, prompt-major
    assert planted.plant(texts, ["a", None, "c"], 2) == ["a", "t1", "t2", "t3", "c", "t5"]
    assert texts[0] == "t0"  # a copy: the caller's list is left alone


# ---- trl_compare ----------------------------------------------------------------------------
def _side(seconds, cpu):
    steps = [dict(seconds=99.0, cpu_seconds=99.0, sample=9.0, update=9.0, rows=8, tokens=[4, 4], prompt_tokens=40,
                  reward=0.25, renders=2)]  # the warm-up: never in the means
    steps += [dict(seconds=s, cpu_seconds=c, sample=s / 2, update=s / 4, reward_seconds=0.1, rows=8, tokens=[4, 4],
                   prompt_tokens=40, reward=0.25, renders=2) for s, c in zip(seconds, cpu)]
    return dict(steps=steps, update_peak=10 * MIB, peak_rss=1000 * MIB, trainable=1234)


def test_seconds_per_rollout_and_the_throughput_ratio():
    work = trl_compare.Work(out="", model="", prompts=2, samples=4, new_tokens=4, micro_batch=4, steps=2,
                            gradient_checkpointing=False, chunk=1, plant=True)
    results = {"vinci": _side([1.0, 3.0], [1.0, 1.0]), "trl": _side([4.0, 4.0], [2.0, 2.0])}
    r = trl_compare.per_rollout(work, results)
    assert r["vinci"] == pytest.approx(2.0 / 8) and r["trl"] == pytest.approx(4.0 / 8)
    assert r["ratio"] == pytest.approx(2.0)  # vinci's rollouts per second over TRL's
    assert r["cpu_ratio"] == pytest.approx(2.0)
    text = trl_compare.throughput_table([(work, r)])
    assert "| prompts |" in text and "2.00x" in text
    detail = trl_compare.table(work, results, vocab=814)
    assert "vinci samples 1 prompts per generate call, TRL all 2" in detail and "planted answers" in detail


# ---- rollout_batch --------------------------------------------------------------------------
def test_runs_parse_as_batch_and_chunk():
    assert rollout_batch.parse_run("64:8") == (64, 8)
    assert rollout_batch.parse_run("64:null") == (64, None)
    assert rollout_batch.parse_run("8") == (8, None)
    with pytest.raises(ValueError):
        rollout_batch.parse_run("8:0")
    assert rollout_batch.generate_calls(64, 8) == 8 and rollout_batch.generate_calls(8, 8) == 1
    assert rollout_batch.generate_calls(9, 4) == 3 and rollout_batch.generate_calls(64, None) == 1


def _record(batch, live_peak, render, exposed, rss=1000):
    def step(memory=False):
        s = dict(batch=batch * MIB // 8, prompts=batch, prompt_tokens=50, seconds=2.0, rows=4 * batch, renders=batch,
                 tokens=4, reward=0.25, phases=dict(sample=1.0, render=render, render_exposed=exposed, score=0.1,
                                                    update=0.5))
        if memory:
            s.update(live_peak=live_peak * MIB, live_start=20 * MIB, peak_op="aten.mm")
        return s

    return dict(steps=[step(), step(), step(), step(memory=True)], peak_rss=rss * MIB, rss_at_start=900 * MIB,
                device="cpu")


def test_summary_compares_memory_across_batches_and_exposure_across_chunks():
    runs = [(8, 8, rollout_batch.summarise(_record(8, 100, 2.0, 1.0), timed=2)),
            (64, 8, rollout_batch.summarise(_record(64, 112, 8.0, 1.0, rss=1100), timed=2)),
            (64, None, rollout_batch.summarise(_record(64, 300, 8.0, 6.0), timed=2)),
            (32, 8, rollout_batch.summarise(_record(32, 120, 4.0, 1.0), timed=2))]
    first = runs[0][2]
    assert first["step"] == 80 * MIB and first["device_like"] == 99 * MIB  # 100 live less the 1 MiB batch
    assert first["exposed_share"] == pytest.approx(0.5)
    lines = rollout_batch.comparisons(runs)
    # the target is the live peak without the host-side batch: 104 / 99 MiB
    assert ("chunk 8: B 64 / B 8 peak memory RSS 1.10x, live 1.12x, live - batch 1.05x, step 1.15x; "
            "live - batch within 10%: yes") in lines
    assert any(line.startswith("chunk 8: B 32 / B 8") and line.endswith("within 10%: NO") for line in lines)
    exposure = [line for line in lines if line.startswith("B 64:")]
    assert exposure == ["B 64: render exposed 12% of render with chunk 8 (1.00 of 8.00 s), 75% in one generate "
                        "call (6.00 of 8.00 s); s/step 2.0 against 2.0"]
    text = rollout_batch.table(runs, samples=4, new_tokens=4, steps=2)
    assert "| 64 |  null |     1 |" in text and "| 64 |     8 |     8 |" in text
    assert not math.isnan(first["exposed_share"])


# ---- end to end, smallest configurations ----------------------------------------------------
def test_rollout_batch_smallest_configuration_end_to_end(tmp_path, capsys, tiny_model):
    rollout_batch.main(["--runs", "2:1", "--samples", "2", "--new-tokens", "4", "--steps", "1",
                        "--languages", "svg", "--n-train", "2", "--model", str(tiny_model), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| 2 |     1 |     2 |" in out  # B 2 in two generate calls
    assert "2 programs rendered a step" in out  # the planted answers reached the renderers
    record = json.loads((tmp_path / "b2-c1.json").read_text())
    measured = record["steps"][-1]
    assert len(record["steps"]) == 3 and ("live_peak" in measured or "cuda_allocated" in measured)
    assert {"sample", "render", "render_exposed", "score", "update", "reference"} <= set(measured["phases"])


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="TRL: pip install -r benchmarks/requirements.txt")
def test_trl_compare_smallest_configuration_end_to_end(tmp_path, capsys, tiny_model):
    trl_compare.main(["--prompts", "2", "--samples", "2", "--new-tokens", "4", "--micro-batch", "4", "--steps", "1",
                      "--vocab", "0", "--chunk", "1", "--plant", "--base", str(tiny_model), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "vinci samples 1 prompts per generate call, TRL all 2" in out
    assert "programs rendered/step 2" in out  # the planted answers reached both renderers
    assert "| prompts | rollouts/step |" in out

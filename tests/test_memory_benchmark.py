"""benchmarks.memory on a tiny config: the tracker sees what is allocated, the measuring functions
run vinci's real paths, the projections are the arithmetic they claim to be, and the card totals
add what the allocator does not count."""

from dataclasses import asdict

import pytest
import torch

from benchmarks import memory_budget as budget
from benchmarks import memory_bounds, memory_fit, memory_measure, memory_models, memory_report
from vinci.tensor_memory import LiveTensorBytes
from vinci.tiny import mrope_sections

GiB = budget.GiB
MiB = budget.MiB

TINY = memory_models.Arch(
    "qwen2_5_vl",
    memory_models.text_config(64, 128, 2, 4, 2, vocab=4096, rope=dict(memory_models.QWEN25_ROPE, mrope_section=mrope_sections(16))),
    dict(memory_models.QWEN25_VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
         window_size=56, fullatt_block_indexes=[1]),
    tied=True,
)


def test_tracker_counts_a_known_allocation_once_and_until_freed():
    keep = torch.zeros(1000)  # alive before: part of the baseline, found by the gc scan
    with LiveTensorBytes() as tracker:
        assert tracker.baseline >= keep.untyped_storage().nbytes()
        start = tracker.current
        x = torch.empty(1 << 20, dtype=torch.uint8)
        view = x[:10]
        x.add_(1)  # in place: the same storage
        assert tracker.current - start == 1 << 20
        del x, view
        assert tracker.current == start
        assert tracker.peak - start == 1 << 20
        tracker.reset_peak()
        w = torch.randn(256, 256, requires_grad=True)
        (torch.randn(64, 256) @ w).relu().sum().backward()  # the backward's tensors are seen too
        assert w.grad is not None and tracker.current - start >= 2 * 256 * 256 * 4
    assert not tracker._finalizers  # nothing stays registered after exit


def test_sampling_fit_recovers_a_line_and_scales_rows():
    # two depths; resident 100 + 10/layer, prefill 50/layer, decode step k: layers * (5 + 2k) (8 rows)
    runs = []
    for layers, n in ((2, 40), (3, 12)):
        base = 100 + 10 * layers
        steps = [base + layers * (5 + 2 * k) for k in range(1, n)] + [base]
        runs.append({"layers": layers, "rows": 8, "new_tokens": n, "baseline": base,
                     "prefill": {"prefill layers": base + 50 * layers, "prefill vision": base + 70}, "steps": steps})
    fit = memory_fit.SamplingFit.from_runs(runs)
    assert fit.slope == pytest.approx([4, 6])
    # 36 layers, 32 rows, 2,048 tokens: resident 460 + 4 x (36 x (5 + 2 x 2047))
    assert fit.peak(36, 32, 2048) == pytest.approx(460 + 4 * 36 * (5 + 2 * 2047))
    assert fit.where(36, 8, 2) == "prefill layers"  # short answers: the prefill is the peak
    assert fit.peak(36, 8, 2) == pytest.approx(460 + 36 * 50)
    assert fit.label(36, 32, 2048) == "projected from 2+3 measured layers, 8 rows, a line through 40+12 decode steps"
    assert fit.label(2, 8, 40) == "measured"


def test_step_fit_solves_the_four_point_design_per_segment():
    P = 1000
    truth = {"forward layers": (7.0, 300.0, 2.0, 40.0), "backward head": (900.0, 10.0, 1.0, 0.0)}

    def act(key, L, n, N):
        T0, r, q, k = truth[key]
        return T0 + n * (r + q * (N - 64) + (L - 2) * k * (P + N) / (P + 64))

    points = [(2, 1, 64), (2, 1, 320), (2, 2, 64), (3, 1, 64)]
    runs = [{"layers": L, "rows": n, "new_tokens": N, "baseline": 50 + 5 * L,
             "segments": {key: 50 + 5 * L + act(key, L, n, N) for key in truth}} for L, n, N in points]
    fit = memory_fit.StepFit.from_runs(runs, P)
    for key in truth:
        assert fit.terms[key] == pytest.approx(truth[key])
    assert fit.where(2, 1, 64) == "backward head"  # measured: the head's chunks dominate a short row
    assert fit.where(36, 4, 2048) == "forward layers"  # full size: the checkpoints do
    assert fit.peak(36, 4, 2048) == pytest.approx(50 + 5 * 36 + act("forward layers", 36, 4, 2048))
    assert fit.label(36, 4, 2048) == "projected from 2+3 measured layers, 1+2 rows, 64+320 tokens"
    assert fit.label(2, 2, 64) == "measured"


def test_largest_tokens_inverts_a_growing_total():
    assert memory_fit.largest_tokens(lambda n: 10 + 3 * n, usable=3010) == "1,000"
    assert memory_fit.largest_tokens(lambda n: 10 + 3 * n, usable=5) == "none"


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from vinci.backbone import Backbone, load_backbone

    out = tmp_path_factory.mktemp("memory")
    folder = memory_models.build_model_dir(TINY, layers=1, vision_depth=2, out=out, image_tokens=16)
    model, processor = load_backbone(Backbone(model=str(folder), dtype="float32", gradient_checkpointing=True))
    model.train()
    inputs = memory_measure.prompt_inputs(processor, memory_models.chart_image(TINY.token_px, 4, 4))
    return model, processor, inputs


def test_measuring_functions_run_vincis_paths_on_a_tiny_model(tiny_policy):
    model, processor, inputs = tiny_policy
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    meter = memory_measure.Meter()
    optimizer, trainable = memory_measure.warm_optimizer(model, 1e-4, 0.0)
    low = len(processor.tokenizer)
    with meter.active():
        sampled = memory_measure.measure_sampling(meter, model, processor, inputs, group=2, new_tokens=6)
        update = [memory_measure.measure_update(meter, model, optimizer, trainable, inputs, n, 8, low) for n in (1, 2)]
        sft = memory_measure.measure_sft(meter, model, optimizer, trainable, inputs, 1, 8, low)
    assert len(sampled["steps"]) == 5 + 1  # one per decode step (forwards 1 .. 5), then the tail
    assert {"prefill vision", "prefill layers", "prefill head"} <= set(sampled["prefill"])
    assert max(sampled["prefill"].values()) > sampled["baseline"]
    assert sampled["baseline"] >= memory_measure.module_bytes(model)  # weights, LoRA, its grads and AdamW state
    parts = {"forward vision", "forward layers", "forward head", "backward head", "backward layers", "step"}
    assert parts <= set(update[0]["segments"]) and parts <= set(sft["segments"])
    peak = lambda run: max(run["segments"].values()) - run["baseline"]  # noqa: E731
    assert peak(update[1]) > peak(update[0]) > 0  # a row costs
    assert peak(sft) > 0


def made_up_measurements(context=None) -> dict:
    """Measurements of qwen2.5-vl-3b made up to follow StepFit's and SamplingFit's forms."""
    def step_runs(kind, per_row):
        return [{"kind": kind, "layers": L, "rows": n, "new_tokens": N, "baseline": 2 * GiB + L * 50e6, "seconds": 1.0,
                 "segments": {"forward layers": 2 * GiB + L * 50e6 + n * (per_row + 1e4 * N + L * 1e7)}}
                for L, n, N in [(2, 1, 64), (2, 1, 320), (2, 2, 64), (3, 1, 64)]]

    sampling = [{"kind": "sampling", "layers": L, "rows": 8, "new_tokens": n, "baseline": 2 * GiB + L * 50e6, "seconds": 1.0,
                 "prefill": {"prefill layers": 2 * GiB + L * 6e7}, "steps": [2 * GiB + L * 50e6 + L * (5e5 + 1e5 * k) for k in range(1, n)] + [0]}
                for L, n in ((2, 32), (3, 16))]
    meta = {"vision_block_bytes": 1e7, "prompt_tokens": 1055, "method": "peak live tensor bytes (LiveTensorBytes)",
            "context": context, "device": "NVIDIA H100" if context else "cpu"}
    return {"name": "qwen2.5-vl-3b", "vision_depth": 1, "meta": {"qlora": meta, "bf16": meta},
            "runs": {"qlora": sampling + step_runs("update", 3e8) + step_runs("sft", 2e8), "bf16": step_runs("sft", 2e8)}}


def made_up_reward() -> dict:
    return memory_report.reward_summary({"baseline": 6e7, "peak": 2.3e9, "weights": 6e7, "depth": 1, "block_bytes": 5e7, "renders": 8})


def test_card_total_adds_context_workspaces_and_a_margin_on_the_transient_bytes():
    need = budget.Need(allocated=10 * GiB, resident=4 * GiB)
    assert need.margin == pytest.approx(64 * MiB + 0.15 * 6 * GiB)
    assert need.total == pytest.approx(10 * GiB + 512 * MiB + 128 * MiB + 64 * MiB + 0.9 * GiB)  # 11.59 GiB
    assert need.fits(16) and need.fits(24)
    tight = budget.Need(allocated=14.3 * GiB, resident=6 * GiB)  # allocated alone is under 16 GB ...
    assert tight.allocated < 16 * 10**9 and tight.total > budget.CARDS[16]  # ... what the card must hold is not
    assert not tight.fits(16) and tight.fits(24)
    assert "16 GB: no" in tight.verdicts() and "24 GB: fits" in tight.verdicts()


def test_a_card_holds_what_cuda_reports_not_its_name():
    assert budget.Need(15.7 * GiB, 15.7 * GiB, budget.Allowance(0, 0, 0, 0)).fits(16) is False  # 15.61 GiB on a 16 GB card
    assert budget.Need(15.6 * GiB, 15.6 * GiB, budget.Allowance(0, 0, 0, 0)).fits(16) is True


def test_on_a_gpu_the_total_is_reserved_plus_the_measured_context():
    allowance = budget.gpu_allowance(0.6 * GiB, "NVIDIA H100")
    measured = budget.Need(allocated=10 * GiB, resident=4 * GiB, allowance=allowance, reserved=11 * GiB)
    assert measured.margin == 0 and measured.total == pytest.approx(11.6 * GiB)
    projected = budget.Need(allocated=10 * GiB, resident=4 * GiB, allowance=allowance)  # no reserved: margin, no workspaces
    assert projected.total == pytest.approx(10.6 * GiB + 64 * MiB + 0.9 * GiB)


def test_largest_fitting_picks_the_largest_candidate_under_the_card():
    need = lambda p: budget.Need(allocated=(8 + 3.5 * p) * GiB, resident=8 * GiB)  # noqa: E731
    assert [need(p).fits(16) for p in (1, 2, 4)] == [True, False, False]  # 12.71 / 16.74 / 24.79 GiB
    assert budget.largest_fitting(need, 16, (1, 2, 4)) == 1
    assert budget.largest_fitting(need, 24, (1, 2, 4)) == 2
    assert budget.largest_fitting(lambda p: need(p + 10), 16, (1, 2, 4)) is None


def test_lora_params_counts_what_peft_trains(tiny_policy):
    model = tiny_policy[0]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert TINY.lora_params(layers=1) == trainable  # r 16 on every language linear layer, vision frozen
    assert memory_models.ARCHS["qwen2.5-vl-3b"].lora_params(2) == 1_662_976  # logged by load_backbone at 2 layers


def test_projection_gives_each_phase_a_need_and_steps_grow_with_the_chunk():
    proj = memory_report.Projection(made_up_measurements(), made_up_reward(), budget.Allowance())
    steps = [proj.step_need(p, 2048, 4) for p in (1, 2, 4)]
    assert steps[0].allocated <= steps[1].allocated < steps[2].allocated  # the KV cache grows with P x G
    assert steps[2].allocated == pytest.approx(proj.sampling.peak(36, 32, 2048) + proj.vq + proj.reward["weights_full"])
    assert steps[2].resident == pytest.approx(proj.sampling.resident(36) + proj.vq + proj.reward["weights_full"])
    evaluation = proj.eval_need(8, 2048)  # bf16 weights without AdamW's state, + 8 rows' activations
    arch = memory_models.ARCHS["qwen2.5-vl-3b"]
    assert evaluation.resident == pytest.approx(proj.sft_bf16.resident(36) + proj.vb - 8 * arch.lora_params(36))
    assert evaluation.allocated - evaluation.resident == pytest.approx(max(proj.sampling.parts(36, 8, 2048).values()))


def test_allowance_is_measured_when_the_runs_were_on_a_gpu():
    assert memory_report.allowance_for([made_up_measurements()]).workspaces == 128 * MiB
    on_gpu = memory_report.allowance_for([made_up_measurements(context=0.7 * GiB)])
    assert on_gpu.context == 0.7 * GiB and on_gpu.workspaces == 0 and "NVIDIA H100" in on_gpu.source
    assert memory_report.allowance_for([made_up_measurements()], context_mib=700).context == 700 * MiB


def test_report_prints_every_phase_with_card_totals_and_the_chunk_table(capsys):
    data = {"plan": asdict(memory_models.Plan()), "reward": made_up_reward(), "models": [made_up_measurements()], "seconds": 1.0}
    memory_report.report(data)
    out = capsys.readouterr().out
    for phase in ("sampling (32 rows", "update, micro-batch 4 (recipe)", "update, micro-batch 2 (fallback)", "reward: DINOv2-L",
                  "step, micro-batch 4", "SFT QLoRA 2x4,096", "SFT LoRA-bf16 2x4,096", "eval bf16 8x2,048",
                  "16 GB  micro-batch 4  1 x 8", "card GiB", "| P=1 (8 rows)", "| P=4 (32 rows)", "context 512 MiB"):
        assert phase in out, phase
    proj = memory_report.Projection(made_up_measurements(), made_up_reward(), budget.Allowance())
    step = proj.step_need(4, 2048, 4)
    assert f"{step.total / GiB:8.2f}" in out  # the recipe's step (4 prompts) is printed as its card total


def test_bounds_count_the_parameters_and_kv_cache_a_model_really_has(tiny_policy):
    model, processor, inputs = tiny_policy
    base = model.get_base_model()
    one_layer = memory_models.Arch(TINY.family, dict(TINY.text, num_hidden_layers=1), TINY.vision, TINY.tied)  # as built
    counts = memory_bounds.count(one_layer)
    assert counts.total == sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    with torch.no_grad():
        cache = base(**inputs, use_cache=True).past_key_values  # float32 here: twice the bf16 bound
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert held == 2 * memory_bounds.kv_bytes(one_layer, rows=1, tokens=inputs["input_ids"].shape[1])


def test_bounds_exclude_a_pairing_only_when_bytes_that_must_exist_exceed_the_card():
    counts = memory_bounds.Counts(linear=6_946_000_000, unquantised=1_821_000_000, lora=43_646_976)  # Qwen3-VL-8B
    phases = dict(memory_bounds.bounds("qwen3-vl-8b", counts, reward=1_217_474_560))
    evaluation = phases["eval NF4 8 x 3,048, + DINOv2-L"]  # the eval recipes load the training recipes' NF4 base
    nf4 = counts.linear // 2 + 2 * counts.unquantised + 4 * counts.lora
    assert evaluation == nf4 + 1_217_474_560 + memory_bounds.kv_bytes(memory_models.ARCHS["qwen3-vl-8b"], 8, 3048)
    assert 2 * counts.total + budget.CONTEXT_BYTES > budget.CARDS[16]  # a bf16 base alone would not fit: 16.3 GiB
    assert evaluation + budget.CONTEXT_BYTES < budget.CARDS[16]  # not excluded
    assert phases["ViRL sampling 4 x 8 at once, + DINOv2-L"] + budget.CONTEXT_BYTES > budget.CARDS[16]  # excluded
    assert phases["ViRL sampling 1 x 8 at once, + DINOv2-L"] + budget.CONTEXT_BYTES < budget.CARDS[16]  # not excluded

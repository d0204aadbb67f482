"""benchmarks.memory on a tiny config: the tracker sees what is allocated, the measuring functions
run vinci's real paths, and the projections are the arithmetic they claim to be."""

import pytest
import torch

from benchmarks import memory
from vinci.tensor_memory import LiveTensorBytes
from vinci.tiny import mrope_sections

GiB = memory.GiB

TINY = memory.Arch(
    "qwen2_5_vl",
    memory.text_config(64, 128, 2, 4, 2, vocab=4096, rope=dict(memory.QWEN25_ROPE, mrope_section=mrope_sections(16))),
    dict(memory.QWEN25_VISION, depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
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
    fit = memory.SamplingFit.from_runs(runs)
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
    fit = memory.StepFit.from_runs(runs, P)
    for key in truth:
        assert fit.terms[key] == pytest.approx(truth[key])
    assert fit.where(2, 1, 64) == "backward head"  # measured: the head's chunks dominate a short row
    assert fit.where(36, 4, 2048) == "forward layers"  # full size: the checkpoints do
    assert fit.peak(36, 4, 2048) == pytest.approx(50 + 5 * 36 + act("forward layers", 36, 4, 2048))
    assert fit.label(36, 4, 2048) == "projected from 2+3 measured layers, 1+2 rows, 64+320 tokens"
    assert fit.label(2, 2, 64) == "measured"


def test_largest_tokens_inverts_a_growing_total():
    assert memory.largest_tokens(lambda n: 10 + 3 * n, usable=3010) == "1,000"
    assert memory.largest_tokens(lambda n: 10 + 3 * n, usable=5) == "none"


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    from vinci.backbone import Backbone, load_backbone

    out = tmp_path_factory.mktemp("memory")
    folder = memory.build_model_dir(TINY, layers=1, vision_depth=2, out=out, image_tokens=16)
    model, processor = load_backbone(Backbone(model=str(folder), dtype="float32", gradient_checkpointing=True))
    model.train()
    inputs = memory.prompt_inputs(processor, memory.chart_image(TINY.token_px, 4, 4))
    return model, processor, inputs


def test_measuring_functions_run_vincis_paths_on_a_tiny_model(tiny_policy):
    model, processor, inputs = tiny_policy
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 16
    meter = memory.Meter()
    optimizer, trainable = memory.warm_optimizer(model, 1e-4, 0.0)
    low = len(processor.tokenizer)
    with meter.active():
        sampled = memory.measure_sampling(meter, model, processor, inputs, group=2, new_tokens=6)
        update = [memory.measure_update(meter, model, optimizer, trainable, inputs, n, 8, low) for n in (1, 2)]
        sft = memory.measure_sft(meter, model, optimizer, trainable, inputs, 1, 8, low)
    assert len(sampled["steps"]) == 5 + 1  # one per decode step (forwards 1 .. 5), then the tail
    assert {"prefill vision", "prefill layers", "prefill head"} <= set(sampled["prefill"])
    assert max(sampled["prefill"].values()) > sampled["baseline"]
    assert sampled["baseline"] >= memory.module_bytes(model)  # weights, LoRA, its grads and AdamW state
    parts = {"forward vision", "forward layers", "forward head", "backward head", "backward layers", "step"}
    assert parts <= set(update[0]["segments"]) and parts <= set(sft["segments"])
    peak = lambda run: max(run["segments"].values()) - run["baseline"]  # noqa: E731
    assert peak(update[1]) > peak(update[0]) > 0  # a row costs
    assert peak(sft) > 0


def test_report_prints_every_phase_of_a_model(capsys):
    """The report end to end, on measurements made up to follow StepFit's and SamplingFit's forms."""
    def step_runs(kind, per_row):
        return [{"kind": kind, "layers": L, "rows": n, "new_tokens": N, "baseline": 2 * GiB + L * 50e6, "seconds": 1.0,
                 "segments": {"forward layers": 2 * GiB + L * 50e6 + n * (per_row + 1e4 * N + L * 1e7)}}
                for L, n, N in [(2, 1, 64), (2, 1, 320), (2, 2, 64), (3, 1, 64)]]

    sampling = [{"kind": "sampling", "layers": L, "rows": 8, "new_tokens": n, "baseline": 2 * GiB + L * 50e6, "seconds": 1.0,
                 "prefill": {"prefill layers": 2 * GiB + L * 6e7}, "steps": [2 * GiB + L * (5e4 + 3e4 * k) for k in range(1, n)] + [0]}
                for L, n in ((2, 32), (3, 16))]
    meta = {"vision_block_bytes": 1e7, "prompt_tokens": 1055, "method": "peak live tensor bytes (LiveTensorBytes)"}
    measured = {"name": "qwen2.5-vl-3b", "vision_depth": 1, "meta": {"qlora": meta, "bf16": meta},
                "runs": {"qlora": sampling + step_runs("update", 3e8) + step_runs("sft", 2e8), "bf16": step_runs("sft", 2e8)}}
    reward = memory.reward_summary({"baseline": 6e7, "peak": 2.3e9, "weights": 6e7, "depth": 1, "block_bytes": 5e7, "renders": 8})
    memory.report({"plan": memory.asdict(memory.Plan()), "reward": reward, "models": [measured], "seconds": 1.0}, 1.0)
    out = capsys.readouterr().out
    for phase in ("sampling (32 rows", "update, micro-batch 4 (recipe)", "update, micro-batch 2 (fallback)", "reward: DINOv2-L",
                  "step peak, micro-batch 4", "SFT QLoRA 2x4,096", "SFT LoRA-bf16 2x4,096", "16 GB  micro-batch 4  1 x 8 rows"):
        assert phase in out

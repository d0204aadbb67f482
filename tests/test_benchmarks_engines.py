"""benchmarks/rollout_engines.py end to end on the embedded default: both engines, one table."""

from benchmarks import rollout_engines
from tests.test_vllm_engine import require_vllm


def test_the_engine_benchmark_prints_both_engines_side_by_side(tmp_path, capsys):
    require_vllm()
    rollout_engines.main(["--prompts", "2", "--samples", "2", "--new-tokens", "6", "--rounds", "1", "--work", str(tmp_path)])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| hf |") or line.startswith("| vllm |")]
    assert len(rows) == 2, out
    for row in rows:
        start, per_rollout, tokens_per_s, peak = (float(cell) for cell in row.strip("|").split("|")[1:5])
        assert per_rollout > 0 and tokens_per_s > 0 and peak > 0 and start > 0
    assert "vllm / hf tokens/s:" in out

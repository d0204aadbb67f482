"""Evaluation: benchmark metrics, per-sample predictions and the HTML report.

    records.py    Prediction: one scored sample, as written to predictions.jsonl
    chart_f1.py   low-level chart scores from two call traces: ChartMimic's four and vinci's own two
    chartmimic.py ChartMimic's text/type/colour/layout F1, as ChartMimic defines them
    chartmimic_record.py  what ChartMimic's evaluator sees of a chart, recorded in the sandbox
    design2code.py        Design2Code's block/text/position/colour scores of a web page (no CLIP)
    design2code_blocks.py Design2Code's OCR-free text blocks: recoloured renders of the page
    metrics.py    torchmetrics Metrics over predictions, per domain
    report.py     report.html: summary table per domain (`summarise`, the per-domain means) and one card per sample
    compare.py    comparing runs: per-prompt means over sampled runs, pairing by id, the bootstrap, the text table
    module.py     EvalModule: the `validate`, `test` and `predict` subcommands

This is the one evaluation path: `main.py test|predict --config configs/eval.yaml` answers and
scores every prompt, and the benchmarks (benchmarks.heldout, benchmarks.virl_gain,
benchmarks.reproduce) read the `Prediction`s that `predict` writes.
"""

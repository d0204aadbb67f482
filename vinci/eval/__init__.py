"""Evaluation: benchmark metrics, per-sample predictions and the HTML report.

    records.py    Prediction: one scored sample, as written to predictions.jsonl
    chart_f1.py   ChartMimic-style low-level F1 (text, type, colour, layout) from two call traces
    metrics.py    torchmetrics Metrics over predictions, per domain
    report.py     report.html: summary table per domain and one card per sample
    module.py     EvalModule: the `validate`, `test` and `predict` subcommands
"""

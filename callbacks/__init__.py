"""Lightning callbacks: adapter export, the ViRL pipeline (rollout, render, reward logging), and
the prediction writer of `predict` (predictions.jsonl, images, report.html)."""

"""Rollout engines other than `generate`: vLLM, run as a worker process in its own environment."""

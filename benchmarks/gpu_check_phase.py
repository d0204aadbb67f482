"""One phase of benchmarks.gpu_check in its own process: vinci's command line, then a JSON line.

    python -m benchmarks.gpu_check_phase --result out.json -- fit --config configs/recipes/... --trainer.max_steps 3
    python -m benchmarks.gpu_check_phase --result out.json -- export --adapter ... --out ...
    python -m benchmarks.gpu_check_phase --result out.json --reward DIR    # DINOv2-L alone, scoring 8 renders

The arguments after `--` go to `vinci.cli.cli_main` unchanged, in this process, so the phase
runs the code `vinci fit | test | export` runs (the allocator setting included). After it the
process's peaks are written: seconds, `torch.cuda.max_memory_allocated` and
`max_memory_reserved`, and the bytes outside the allocator (used minus reserved: the CUDA
context; on a CPU the memory figures are null), with the run's logged metrics. A fresh process per phase gives clean peaks.

`PlantAnswers` is the sampler the ViRL phase runs: RolloutSampler's sampling unchanged, then the
first answer of each group's text replaced by the row's reference program, so that a random
policy's step still renders something and the reward encoder runs on the GPU beside it (the
token ids, and so the update's memory, stay the sampled ones).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from callbacks.rollout import RolloutSampler


class PlantAnswers(RolloutSampler):
    """RolloutSampler whose first sample of each group reads as the reference program."""

    def sample_chunk(self, module, chunk):
        done = super().sample_chunk(module, chunk)  # the sampled tokens stay: the update's cost is real
        for prompt, answer in enumerate(chunk.answers):
            if answer:
                done.texts[prompt * self.num_samples] = answer
        return done


def peaks(started: float) -> dict:
    """Seconds since `started` and the process's CUDA peaks (null on a CPU)."""
    import torch

    out = {"seconds": round(time.perf_counter() - started, 1), "allocated": None, "reserved": None, "context": None,
           "device": "cpu"}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        out.update(allocated=torch.cuda.max_memory_allocated(), reserved=torch.cuda.max_memory_reserved(),
                   context=total - free - torch.cuda.memory_reserved(), device=torch.cuda.get_device_name())
    return out


def score_renders(encoder: str) -> None:
    """The reward pass alone: 8 near-miss renders of a chart scored against it by `encoder` on the
    GPU, as ViRLModule's PatchSimilarity holds it (moved with the module)."""
    import torch

    from benchmarks.memory_measure import reward_images
    from vinci.reward.encoders import build_encoder
    from vinci.reward.similarity import patch_similarity

    model = build_encoder(encoder)
    if torch.cuda.is_available():
        model = model.cuda()
    reference, renders = reward_images(8)
    patch_similarity(renders, [reference] * 8, model, tile_size=448, max_tiles=12)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, cli = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--reward", metavar="ENCODER", help="score renders with this encoder instead of running the CLI")
    args = parser.parse_args(ours)
    from vinci.cli import cli_main, default_allocator

    default_allocator()
    started = time.perf_counter()
    metrics = {}
    if args.reward:
        score_renders(args.reward)
    else:
        done = cli_main(cli)
        trainer = getattr(done, "trainer", None)  # fit / test: the CLI object; export: the folder
        if trainer is not None:
            metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    result = dict(peaks(started), args=cli or ["--reward", args.reward], metrics=metrics)
    Path(args.result).write_text(json.dumps(result))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""What the output vocabulary costs one ViRL step, through `main.py fit`, in peak RSS.

    python -m benchmarks.vocab_memory                       # 151,936 (Qwen) against the tiny vocabulary
    python -m benchmarks.vocab_memory --new-tokens 256 --vocab 65536

Two copies of one tiny model, the same in everything but the output vocabulary: the embedded
tiny Qwen2-VL (about 800 BPE words) and the same weights with the (tied) embedding and head
resized to `--vocab` rows. Each runs one step of configs/virl.yaml in its own process: a fresh
LoRA (no SFT adapter, no KL), 2 prompts x 2 samples, `--new-tokens` new tokens each, update
micro-batches of 2 rows. Both models are made unable to stop early (their end-of-sequence id
is an image token, which sampling suppresses), so every completion is `--new-tokens` long:
the worst case memory must fit, as a random policy writes it. The table gives each process's
peak RSS and the difference, which is what the vocabulary costs. For scale, one float32
[2, 512, 151936] tensor is 594 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def build_models(out: Path, vocab: int) -> tuple[Path, Path]:
    """(tiny, resized) model folders whose generation never ends before max_new_tokens."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vinci.tiny import TinySpec, build_tiny_vlm

    tiny = build_tiny_vlm(out / "tiny", TinySpec(texts_per_language=60))
    folders = []
    for name, size in (("small", None), ("large", vocab)):
        model = AutoModelForImageTextToText.from_pretrained(tiny)
        processor = AutoProcessor.from_pretrained(tiny)
        if size is not None:
            model.resize_token_embeddings(size, mean_resizing=False)
        never = model.config.video_token_id  # suppressed while sampling, so never drawn
        model.generation_config.eos_token_id = never
        processor.tokenizer.eos_token = "<|video_pad|>"
        folder = out / name
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        folders.append(folder)
    return folders[0], folders[1]


def step_config(out: Path, model: Path, new_tokens: int, head_chunk: int | None) -> Path:
    from benchmarks.reproduce import retarget, write_config

    config = retarget(yaml.safe_load((ROOT / "configs" / "virl.yaml").read_text()), out, model.name)
    config["trainer"].update(max_steps=1, enable_progress_bar=False)
    config["sampler"]["init_args"].update(num_samples=2, max_new_tokens=new_tokens)
    init = config["model"]["init_args"]
    init["backbone"].update(model=str(model), embedded=False, adapter=None)
    init.update(kl_coef=0.0, micro_batch_size=2)
    if head_chunk:
        init["head_chunk"] = head_chunk
    config["data"].update(batch_size=2)
    config["data"]["synthetic"].update(dir=str(out / "synth"), n_train=2, n_val=1, n_test=1, languages=["svg"])
    return write_config(config, out / f"{model.name}.yaml")


def peak_rss_mib(config: Path, log: Path) -> tuple[float, float]:
    """Run one fit in a fresh process; (its peak RSS in MiB, seconds)."""
    code = (
        "import json, resource, sys; from main import cli_main; "
        f"cli_main(['fit', '--config', {str(config)!r}]); "
        "print('PEAK', json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))"
    )
    started = time.perf_counter()
    with open(log, "w") as out:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    lines = log.read_text().splitlines()
    if result.returncode != 0:
        raise SystemExit(f"fit with {config} failed; see {log}:\n" + "\n".join(lines[-20:]))
    peak_kib = next(json.loads(line.split()[1]) for line in reversed(lines) if line.startswith("PEAK "))
    return peak_kib / 1024, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=151936, help="output vocabulary of the large copy (Qwen: 151,936)")
    parser.add_argument("--new-tokens", type=int, default=512, help="tokens each completion writes")
    parser.add_argument("--head-chunk", type=int, default=None, help="ViRLModule.head_chunk (default: the module's)")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="vocab-memory-"))
    small, large = build_models(out, args.vocab)
    # build the corpus once, outside the measured processes
    subprocess.run([sys.executable, "-c", "from vinci.data.synth import build_corpus; "
                    f"build_corpus({str(out / 'synth')!r}, seed=0, n_train=2, n_val=1, n_test=1, languages=['svg'])"],
                   cwd=ROOT, check=True, capture_output=True)
    rows = []
    for folder in (small, large):
        from transformers import AutoConfig

        vocab = AutoConfig.from_pretrained(folder).text_config.vocab_size
        peak, seconds = peak_rss_mib(step_config(out, folder, args.new_tokens, args.head_chunk), out / f"{folder.name}.log")
        rows.append((vocab, peak, seconds))
    print(f"one ViRL step via main.py fit: 2 prompts x 2 samples x {args.new_tokens} new tokens, micro-batch 2, fresh LoRA")
    print(f"{'output vocabulary':>18} | {'peak RSS MiB':>12} | {'seconds':>7}")
    for vocab, peak, seconds in rows:
        print(f"{vocab:>18,} | {peak:>12,.0f} | {seconds:>7.1f}")
    print(f"vocabulary cost: {rows[1][1] - rows[0][1]:,.0f} MiB "
          f"(one fp32 [2, {args.new_tokens}, {args.vocab}] tensor: {2 * args.new_tokens * args.vocab * 4 / 2**20:,.0f} MiB)")


if __name__ == "__main__":
    main()

"""benchmarks/conditioning.py: swaps stay within language and task, and the loss is the answer's."""

import random
from pathlib import Path

import pytest

from benchmarks.conditioning import answer_losses, load_policy, main, swapped
from vinci.data.rows import Example


def test_swaps_take_another_row_of_the_same_language_and_task():
    meta = [{"language": lang, "task": task} for lang in ("svg", "html") for task in ("direct", "refine") for _ in range(3)]
    examples = [Example(None, f"prompt {i}", m["language"], f"answer {i}", "s", str(i)) for i, m in enumerate(meta)]
    out = swapped(examples, meta, "prompt", random.Random(0))
    for i, (before, after) in enumerate(zip(examples, out)):
        donor = int(after.prompt.split()[1])
        assert donor != i and meta[donor] == meta[i]
        assert after.answer == before.answer and after.id == before.id  # only the prompt moved


def test_answer_loss_counts_only_answer_tokens(tiny_model, tiny_corpus, capsys):
    from vinci.data.rows import read_rows

    net, processor = load_policy(str(tiny_model), None)
    assert not any(m.training for m in net.modules()) and not any(p.requires_grad for p in net.parameters())  # LoRA dropout off
    rows = read_rows(tiny_corpus / "sft_test.jsonl", schema="sft", min_pixels=56 * 56, max_pixels=224 * 224)
    example = rows[0]
    (loss,) = answer_losses(net, processor, [example])
    other_prompt = Example(example.image, example.prompt + " Please.", example.language, example.answer, "s", "x")
    other_answer = Example(example.image, example.prompt, example.language, example.answer + "\n", "s", "y")
    assert loss > 0 and answer_losses(net, processor, [other_answer])[0] != pytest.approx(loss)
    # batched rows of different lengths give the per-row values of unbatched ones
    both = answer_losses(net, processor, [example, other_prompt])
    assert both[0] == pytest.approx(loss, rel=1e-4)
    assert both[1] == pytest.approx(answer_losses(net, processor, [other_prompt])[0], rel=1e-4)

    main(["--adapter", "", "--model", str(tiny_model), "--rows", str(tiny_corpus / "sft_test.jsonl")])
    table = capsys.readouterr().out
    assert "image swapped" in table and "\nall " in table

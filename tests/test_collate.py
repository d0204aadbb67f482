"""Label masking: only the answer (and the template's end of turn) is trained on."""

from PIL import Image

from vinci.backbone import load_processor
from vinci.data.collate import IGNORE, RLBatch, RLCollator, SFTBatch, SFTCollator
from vinci.data.rows import Example


def _examples():
    red = Image.new("RGB", (120, 80), "red")
    blue = Image.new("RGB", (64, 64), "blue")
    return [
        Example(red, "<image>Write the svg code that draws this image.", "svg", '```svg\n<svg><rect width="4"/></svg>\n```', "t:0"),
        Example(blue, "<image>Write the matplotlib python code that draws this chart.", "python",
                "```python\nimport matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])\nplt.show()\n```", "t:1"),
    ]


def test_unmasked_tokens_decode_to_the_answer(tiny_model):
    processor = load_processor(str(tiny_model))
    examples = _examples()
    batch = SFTCollator(processor)(examples)
    assert batch.labels.shape == batch.inputs["input_ids"].shape
    for row, example in enumerate(examples):
        kept = batch.labels[row][batch.labels[row] != IGNORE]
        decoded = processor.tokenizer.decode(kept, skip_special_tokens=False)
        assert decoded == example.answer + "<|im_end|>\n"
        # every image token and every pad is masked
        ids = batch.inputs["input_ids"][row]
        image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        assert (ids == image_id).any()
        assert (batch.labels[row][ids == image_id] == IGNORE).all()
        assert (batch.labels[row][batch.inputs["attention_mask"][row] == 0] == IGNORE).all()


def test_sft_batch_runs_through_the_model(tiny_model):
    from vinci.backbone import Backbone, load_backbone

    model, processor = load_backbone(Backbone(model=str(tiny_model)))
    batch = SFTCollator(processor)(_examples())
    out = model(**batch.inputs, labels=batch.labels)
    assert out.loss.isfinite()


def test_rl_prompts_are_left_padded(tiny_model):
    processor = load_processor(str(tiny_model))
    batch = RLCollator(processor)(_examples())
    mask = batch.inputs["attention_mask"]
    assert mask.shape[0] == 2
    assert (mask[:, -1] == 1).all()  # every prompt ends at the right edge
    assert batch.languages == ["svg", "python"]
    assert len(batch.images) == 2



def test_batches_pin_every_tensor_when_the_loader_pins(tiny_model, monkeypatch):
    """DataLoader(pin_memory=True) returns an object without a pin_memory method as it is: the
    batch classes must pin their own tensors, or pinning does nothing."""
    import torch
    from torch.utils.data._utils.pin_memory import pin_memory  # what the loader calls on each batch

    pinned = []

    def fake_pin(tensor, *args, **kwargs):  # page-locked memory needs a GPU driver: record instead
        copy = tensor.clone()
        pinned.append(copy)
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    processor = load_processor(str(tiny_model))
    for collator, kind in ((SFTCollator(processor), SFTBatch), (RLCollator(processor), RLBatch)):
        batch = pin_memory(collator(_examples()))
        assert isinstance(batch, kind)
        tensors = [t for t in (*batch.inputs.values(), *vars(batch).values()) if isinstance(t, torch.Tensor)]
        assert len(tensors) >= 3 and all(any(t is p for p in pinned) for t in tensors), kind.__name__
        if kind is RLBatch:  # the rest of the batch comes through as it was
            assert len(batch.images) == 2 and batch.languages == ["svg", "python"]

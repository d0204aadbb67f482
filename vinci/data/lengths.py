"""Token lengths of rows, counted the way the collators will encode them, without any image.

A row's length is its templated text (prompt, plus the answer for SFT) in tokens, plus the
tokens its image adds. The image's count depends only on its fitted size, so it is measured
once per distinct size by running the real processor on a blank image of that size; that run
also applies the processor's own size and aspect rules, and a size the processor refuses is
reported as "rejected by the processor" instead of failing inside a batch later.

`LengthCheck` is the data module's per-example hook (`RowSet.check`): it returns None, or
(reason, detail) for a row that is too long or that the processor refuses. It holds the
processor, so it travels to DataLoader workers with the dataset.
"""

from __future__ import annotations

from typing import Optional, Sequence

from PIL import Image

from vinci.data.collate import full_text, prompt_text


class LengthCheck:
    def __init__(self, processor, stage: str, max_length: int):
        self.processor, self.stage, self.max_length = processor, stage, max_length
        self._image_tokens: dict[tuple[int, int], int | str] = {}  # size -> tokens, or the processor's refusal

    def image_tokens(self, size: tuple[int, int]) -> int | str:
        """Tokens an image of this size adds beyond the placeholder text, or why it is refused."""
        if size not in self._image_tokens:
            text = prompt_text(self.processor, "<image>")
            plain = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
            try:
                expanded = self.processor(text=[text], images=[Image.new("RGB", size, "white")], return_tensors="pt")
                self._image_tokens[size] = expanded["input_ids"].shape[1] - plain
            except (ValueError, RuntimeError, IndexError) as err:  # the processor's own rules (aspect, minimum size)
                self._image_tokens[size] = f"{size[0]}x{size[1]}: {str(err).strip().splitlines()[0][:200]}"
        return self._image_tokens[size]

    def texts(self, prompts: Sequence[str], answers: Sequence[Optional[str]]) -> list[str]:
        if self.stage == "sft":
            return [full_text(self.processor, p, a) for p, a in zip(prompts, answers)]
        return [prompt_text(self.processor, p) for p in prompts]

    def problems(self, prompts: Sequence[str], answers: Sequence[Optional[str]],
                 sizes: Sequence[tuple[int, int]]) -> list[Optional[tuple[str, str]]]:
        """None, or (reason, detail), for each row; the text is tokenised as one batch."""
        ids = self.processor.tokenizer(self.texts(prompts, answers), add_special_tokens=False)["input_ids"]
        out = []
        for tokens, size in zip(ids, sizes):
            image = self.image_tokens(tuple(size))
            if isinstance(image, str):
                out.append(("rejected by the processor", image))
            elif len(tokens) + image > self.max_length:
                out.append(("too long", f"{len(tokens) + image} tokens > max_length={self.max_length}"))
            else:
                out.append(None)
        return out

    def __call__(self, example) -> Optional[tuple[str, str]]:
        return self.problems([example.prompt], [example.answer], [example.image.size])[0]

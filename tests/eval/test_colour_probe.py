"""benchmarks/colour_probe.py: examples differ only in the square's colour, and training runs."""

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageColor

from benchmarks.colour_probe import SQUARE, example, main, picture, program
from vinci.data.synth.vocab import COLORS


def test_picture_and_program_carry_the_same_colour_and_nothing_else_changes():
    x, y, side = SQUARE
    for colour in COLORS:
        pixels = np.asarray(picture(colour))  # [128, 128, 3]
        assert tuple(pixels[y + side // 2, x + side // 2]) == ImageColor.getrgb(colour)
        assert tuple(pixels[4, 4]) == (255, 255, 255)
        assert f'fill="{colour}"' in program(colour)
    assert program("red").replace("red", "blue") == program("blue")
    wrong = example("red", "blue")  # the image of one colour with the answer of another
    assert wrong.answer == program("blue") and np.array_equal(np.asarray(wrong.image), np.asarray(picture("red")))


def test_two_steps_train_and_report_every_colour(tiny_model, capsys):
    (row,) = main(["--model", str(tiny_model), "--steps", "2", "--batch-size", "2", "--lrs", "1e-3",
                   "--vision-lr-scales", "0.1"])
    assert 0 <= row["named"] <= len(COLORS) and row["steps"] == 2 and row["vision_lr_scale"] == 0.1
    assert math.isfinite(row["loss"]) and row["loss"] > row["floor"] > 0
    assert "| 0.001 | 0.1 |" in capsys.readouterr().out

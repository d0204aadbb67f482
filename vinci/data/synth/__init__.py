"""The synthetic image-to-code corpus: procedural programs in four domains, and the built corpus.

`generate(language, n, seed)` writes n distinct programs of one language, each with a flawed
twin for visual-refinement rows (no rendering; the tiny model's tokenizer trains on this text).
`build_corpus(out_dir, ...)` renders them and writes SFT and RL rows (see `corpus`); run it as
``python -m vinci.data.synth --out DIR --seed 0``.

What it simplifies: the programs are short and regular on purpose (one style per domain, a
vocabulary of a few dozen words, colours and small numbers), so that a model of a few million
parameters can learn them in minutes on a CPU. They are not a substitute for real data.
"""

from vinci.data.synth.corpus import build_corpus, read_manifest
from vinci.data.synth.programs import DOMAINS, Program, generate

__all__ = ["DOMAINS", "Program", "build_corpus", "generate", "read_manifest"]

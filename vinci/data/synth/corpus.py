"""Build the synthetic corpus: render generated programs and write SFT and RL rows with splits.

Layout of ``out_dir`` (paths in rows are relative to it, as `vinci.data.rows` expects):

    images/{split}/{language}_{index:04d}.png   one render per program
    sft_{split}.jsonl    ms-swift rows: messages (user with <image>, assistant) + images
    rl_{split}.jsonl     EasyR1 rows: problem (with <image>) + images + answer
    manifest.json        written last: seed, sizes, counts; its presence means "complete"

Every program gives a direct-generation row (image -> code); a `refine_fraction` of them also
gives a visual-refinement row (image + flawed code -> code). Both schemas hold the same rows in
the same order, with extra columns ``language``, ``task`` (direct|refine) and ``flaw``. Answers
are fenced code (`vinci.tasks.fence`) in both schemas. Programs of the three splits are
distinct (one generated list, cut in three). A program whose render fails is dropped and
counted in the manifest. The same seed gives the same files, byte for byte, on one machine
(renders depend on the installed fonts and TeX, so not necessarily across machines).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from vinci import tasks
from vinci.leftovers import remove_dead
from vinci.data.synth.programs import Program, generate
from vinci.render import RenderJob, RenderOptions, RenderPool

log = logging.getLogger(__name__)

VERSION = 2  # 2: SVG and TikZ elements in reading order; older corpora are rebuilt
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"
# Small renders: the tiny model sees a few thousand pixels anyway, and small is fast.
RENDER_OPTIONS = RenderOptions(python_dpi=50, html_width=320, html_height=240, html_full_page=False, latex_dpi=100)
CHUNK = 96  # jobs per render batch (one progress line each)


def read_manifest(out_dir: str | Path) -> Optional[dict]:
    """The manifest of a complete corpus in `out_dir`, or None when there is none (or too old)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s is not valid JSON (%s); treating the corpus as absent", path, err)
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == VERSION else None


def _check_target(out: Path) -> list[str]:
    """Refuse an `out` that is a file, or a non-empty folder that is not a corpus; return the
    names of files in it that are not the corpus's own (kept across a rebuild)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"corpus output {out} exists and is not a folder")
    if not out.is_dir():
        return []
    ours = {MANIFEST, "images", *(f"{s}_{p}.jsonl" for s in ("sft", "rl") for p in SPLITS)}
    foreign = sorted({p.name for p in out.iterdir()} - ours)
    if foreign and not (out / MANIFEST).is_file():
        raise ValueError(f"refusing to build the corpus into {out}: it is not empty "
                         f"(it holds {', '.join(foreign[:3])}) and has no {MANIFEST}")
    return foreign


def _install(staged: Path, out: Path, foreign: list[str]) -> None:
    """Rename the finished corpus `staged` to `out`, replacing an earlier corpus there (files
    that are not the corpus's own move across)."""
    if not out.exists():
        os.rename(staged, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    os.rename(staged, out)
    for name in foreign:
        os.rename(old / name, out / name)
    shutil.rmtree(old, ignore_errors=True)


def _render(programs: list[Program], pool: RenderPool, options: RenderOptions, timeout: float) -> list:
    """Render every program; languages are interleaved so browser and fork workers overlap."""
    order = sorted(range(len(programs)), key=lambda i: (i % 7, i))  # mixes languages per chunk
    results: list = [None] * len(programs)
    with tqdm(total=len(order), desc="rendering the synthetic corpus", unit="program", disable=None) as bar:
        for start in range(0, len(order), CHUNK):
            chunk = order[start:start + CHUNK]
            jobs = [RenderJob(programs[i].language, programs[i].code, timeout, options) for i in chunk]
            for i, result in zip(chunk, pool.render_many(jobs)):
                results[i] = result
            bar.update(len(chunk))
    return results


def _rows(program: Program, image: str, refine: bool) -> list[tuple[dict, dict]]:
    """(SFT row, RL row) pairs for one program: direct, and refine when asked."""
    task = tasks.TASKS[program.language]
    answer = tasks.fence(program.code, program.language)
    prompts = [("direct", task.direct_prompt, None)]
    if refine:
        prompts.append(("refine", task.refine_prompt.format(code=program.flawed_code), program.flaw))
    pairs = []
    for kind, prompt, flaw in prompts:
        extra = {"language": program.language, "task": kind, "flaw": flaw}
        sft = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
               "images": [image], **extra}
        rl = {"problem": prompt, "images": [image], "answer": answer, **extra}
        pairs.append((sft, rl))
    return pairs


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def build_corpus(out_dir: str | Path, seed: int = 0, n_train: int = 300, n_val: int = 25, n_test: int = 50,
                 languages: Sequence[str] = tasks.LANGUAGES, refine_fraction: float = 0.25,
                 workers: int = 2, timeout: float = 30.0, options: Optional[RenderOptions] = None,
                 pool: Optional[RenderPool] = None) -> Path:
    """Generate, render and write the corpus into `out_dir` (sizes are programs per language).

    Renders with `pool` when given (its workers are reused, `workers` is ignored), else with a
    new `RenderPool(workers)` closed at the end. `options` defaults to `RENDER_OPTIONS`.

    Returns the output folder. Raises ValueError on bad arguments or a non-corpus folder, and
    RuntimeError when more than a tenth of a language's programs fail to render (a broken
    renderer install, not a few bad programs).
    """
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError(f"split sizes must be >= 0 and not all 0, got {n_train}, {n_val}, {n_test}")
    if not 0.0 <= refine_fraction <= 1.0:
        raise ValueError(f"refine_fraction must be in [0, 1], got {refine_fraction}")
    languages = list(dict.fromkeys(tasks.canonical(lang) for lang in languages))
    started = time.monotonic()
    out = Path(out_dir)
    foreign = _check_target(out)
    # Written under a temporary name beside `out` and renamed into place when complete, so a
    # killed build leaves the earlier corpus (or none), never half of one.
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_dead(out.parent.glob(f".{out.name}.*-*"))  # what killed builds left
    final, out = out, out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    try:
        sizes = {"train": n_train, "val": n_val, "test": n_test}
        programs = {lang: generate(lang, sum(sizes.values()), seed) for lang in languages}
        flat = [p for lang in languages for p in programs[lang]]
        options = options or RENDER_OPTIONS
        if pool is None:
            with RenderPool(workers=workers, timeout=timeout, options=options) as own:
                results = iter(_render(flat, own, options, timeout))
        else:
            results = iter(_render(flat, pool, options, timeout))

        counts: dict = {split: {} for split in SPLITS}
        rows: dict = {split: [] for split in SPLITS}
        for lang in languages:
            cut = 0
            failures = []
            for split in SPLITS:
                chosen = programs[lang][cut:cut + sizes[split]]
                cut += sizes[split]
                folder = out / "images" / split
                folder.mkdir(parents=True, exist_ok=True)
                kept = []
                for index, program in enumerate(chosen):
                    result = next(results)
                    if not result.ok:
                        failures.append(result.error)
                        continue
                    name = f"images/{split}/{lang}_{index:04d}.png"
                    result.image.convert("RGB").save(out / name, format="PNG")
                    kept.append((program, name))
                pick = random.Random(f"vinci-corpus:{seed}:{split}:{lang}")
                refine = set(pick.sample(range(len(kept)), round(refine_fraction * len(kept))))
                for k, (program, name) in enumerate(kept):
                    rows[split] += _rows(program, name, k in refine)
                counts[split][lang] = {"programs": len(kept), "dropped": len(chosen) - len(kept),
                                       "direct": len(kept), "refine": len(refine)}
            if failures:
                log.warning("%s: %d programs failed to render and were dropped; first error: %s",
                            lang, len(failures), failures[0])
            if len(failures) > 0.1 * len(programs[lang]):
                raise RuntimeError(f"{len(failures)} of {len(programs[lang])} {lang} programs failed to render "
                                   f"(first error: {failures[0]}); is the renderer installed?")

        files = {}
        for split in SPLITS:
            random.Random(f"vinci-corpus:{seed}:{split}:order").shuffle(rows[split])
            for schema, column in (("sft", 0), ("rl", 1)):
                name = f"{schema}_{split}.jsonl"
                _write_jsonl(out / name, [pair[column] for pair in rows[split]])
                files[name] = len(rows[split])
        manifest = {"version": VERSION, "seed": seed, "languages": languages, "sizes": sizes,
                    "refine_fraction": refine_fraction, "render_options": options.to_dict(),
                    "files": files, "counts": counts}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _install(out, final, foreign)
    except BaseException:  # a failed build leaves nothing behind
        shutil.rmtree(out, ignore_errors=True)
        raise
    log.info("synthetic corpus in %s: %d rows in %.1f s", final, sum(files.values()) // 2,
             time.monotonic() - started)
    return final

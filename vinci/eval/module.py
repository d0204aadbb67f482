"""EvalModule: the `validate`, `test` and `predict` subcommands.

    python main.py test --config configs/eval.yaml                 # synthetic held-out split
    python main.py test --config configs/eval.yaml --data.benchmark.dir ../shared/corpora/chart
    python main.py predict --config configs/eval.yaml --data.benchmark.dir ../shared/corpora/chart

Each batch of prompts (RL batches: left-padded prompts + reference images) is answered once
(greedy by default), the code is extracted and rendered in the sandboxed pool, and every
sample is scored (`vinci.eval.scoring`). `validate`/`test` log per-domain means as
torchmetrics Metrics (`vinci.eval.metrics`); `predict` returns one `Prediction` per sample for
the `PredictionWriter` callback, which writes predictions.jsonl, the renders and report.html.

For charts whose reference program is known (ChartMimic-style folders, RL rows with an
answer), the reference is rendered once with call tracing and its trace kept for the run, so
the low-level F1 scores compare the calls of both programs. Likewise for web pages whose
reference page is known (Design2Code-style folders, RL rows with an answer): the reference is
rendered once (as is and in two recoloured variants) and its text blocks kept for the run, so
Design2Code's low-level scores compare the blocks of both pages.
"""

from __future__ import annotations

import logging
from typing import Literal, Optional

import torch

from vinci.backbone import Backbone
from vinci.data.collate import RLBatch
from vinci.engines.vllm_client import VLLMSettings
from vinci.eval.metrics import DomainScores
from vinci.eval.records import Prediction, safe_id
from vinci.eval.scoring import reference_program, score_samples
from vinci.module import BackboneModule
from vinci.reward.metric import PatchSimilarity
from vinci.render.options import RenderOptions

log = logging.getLogger(__name__)


class EvalModule(BackboneModule):
    def __init__(
        self,
        backbone: Backbone,
        max_new_tokens: int = 1024,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        workers: int = 2,
        timeout: float = 10.0,
        render_options: Optional[RenderOptions] = None,
        encoder: str = "pixel",
        tile_size: int = 448,
        max_tiles: int = 12,
        global_weight: Optional[float] = None,
        format_weight: float = 0.1,
        seed: int = 0,
        oracle: bool = False,
        engine: Literal["hf", "vllm"] = "hf",
        vllm: Optional[VLLMSettings] = None,
    ):
        """
        Args:
            backbone: model and the adapter to evaluate (`backbone.adapter`; None = the base model).
            max_new_tokens: length cap of each answer.
            do_sample: sample instead of greedy decoding.
            temperature: sampling temperature (do_sample only).
            top_p: nucleus sampling mass (do_sample only).
            workers: render processes.
            timeout: seconds per program before its render counts as failed.
            render_options: how programs are rendered (dpi, page size); match the references'.
            encoder: vision encoder of the visual score: "pixel" or "timm:<model name>".
            tile_size: crop size of the coarse-to-fine tiling.
            max_tiles: most local tiles per image.
            global_weight: share of the thumbnail in the visual score; None = uniform (paper).
            format_weight: share of the format term in `reward` (as in training).
            seed: sampling seed (do_sample only).
            oracle: answer every prompt with its reference program instead of the model: the
                best each score can be on this benchmark with these render settings.
            engine: what answers: "hf" (`generate`) or "vllm" (a vLLM worker in its own environment,
                faster on long answers; see vinci.engines).
            vllm: the vLLM worker's settings.
        """
        super().__init__(backbone, optimizer=torch.optim.AdamW)
        self.save_hyperparameters()
        self.trains = False  # adapter loaded for inference: nothing requires grad
        self.generation = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p)
        self.render_options = render_options  # also how the data module draws references that lack a PNG
        self.render_settings = dict(workers=workers, timeout=timeout, options=render_options)
        self.format_weight = format_weight
        # a child module, so the reward encoder (DINOv2-L in the recipes) runs on the model's device
        self.visual = PatchSimilarity(encoder=encoder, tile_size=tile_size, max_tiles=max_tiles, global_weight=global_weight)
        self.seed = seed
        self.oracle = oracle
        if engine not in ("hf", "vllm"):
            raise ValueError(f"engine must be hf or vllm, got {engine!r}")
        self.engine = engine
        self.vllm = vllm or VLLMSettings()
        self.rollouts = None  # the vLLM worker, started at the first batch
        self.policy_version = 0  # the adapter never changes here: the worker loads it once
        self.scores = DomainScores()
        self.pool = None
        self.reference_traces: dict[str, Optional[dict]] = {}  # reference program -> its call trace (None: it failed)
        self.reference_blocks: dict[str, Optional[list]] = {}  # reference page -> its Design2Code blocks (None: it failed)

    # -- render pool lifetime: one warm pool per evaluation run ------------------------------
    def _start_pool(self) -> None:
        from vinci.render import RenderPool

        if self.pool is None:
            self.pool = RenderPool(**self.render_settings).__enter__()
        self.reference_traces.clear()
        self.reference_blocks.clear()
        if self.generation["do_sample"]:
            torch.manual_seed(self.seed)

    def _stop_pool(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.__exit__(None, None, None)

    def on_validation_start(self) -> None:
        self._start_pool()

    def on_test_start(self) -> None:
        self._start_pool()

    def on_predict_start(self) -> None:
        self._start_pool()

    def on_validation_end(self) -> None:
        self._stop_pool()

    def on_test_end(self) -> None:
        self._stop_pool()

    def on_predict_end(self) -> None:
        self._stop_pool()

    def teardown(self, stage: str) -> None:
        self._stop_pool()
        if self.rollouts is not None:
            self.rollouts.close()
            self.rollouts = None

    # -- the shared step ----------------------------------------------------------------------
    def _reference_traces(self, batch: RLBatch, ids: list[str]) -> list[Optional[dict]]:
        """[B] call trace of each chart row's reference program (None: not a chart, no program,
        or it failed to render), rendered once per run and keyed by the program's text."""
        from vinci.render import RenderJob

        programs = [
            reference_program(answer, language) if language == "python" else None
            for language, answer in zip(batch.languages, batch.answers)
        ]
        todo = sorted({p for p in programs if p is not None and p not in self.reference_traces})
        timeout = 3 * self.render_settings["timeout"]  # references are trusted to finish; give slow ones room
        results = self.pool.render_many([RenderJob("python", p, timeout=timeout, trace=True) for p in todo])
        for program, result, sample_id in zip(todo, results, [ids[programs.index(p)] for p in todo]):
            self.reference_traces[program] = result.trace if result.ok else None
            if not result.ok or result.trace is None:
                log.warning("%s: the reference program did not trace (%s); its chart F1 scores are left out",
                            sample_id, result.error or "no trace")
        return [self.reference_traces.get(p) if p is not None else None for p in programs]

    def _reference_blocks(self, batch: RLBatch, ids: list[str]) -> list[Optional[list]]:
        """[B] Design2Code text blocks of each web row's reference page (None: not a page, no
        page, or it failed to render), rendered once per run and keyed by the page's text."""
        from vinci.eval.design2code import page_blocks

        pages = [
            reference_program(answer, language) if language == "html" else None
            for language, answer in zip(batch.languages, batch.answers)
        ]
        todo = sorted({p for p in pages if p is not None and p not in self.reference_blocks})
        timeout = 3 * self.render_settings["timeout"]  # references are trusted to finish; give slow ones room
        for page, blocks, sample_id in zip(todo, page_blocks(todo, self.pool, prediction=False, timeout=timeout), [ids[pages.index(p)] for p in todo]):
            self.reference_blocks[page] = blocks
            if blocks is None:
                log.warning("%s: the reference page did not render; its Design2Code scores are left out", sample_id)
        return [self.reference_blocks.get(p) if p is not None else None for p in pages]

    def answer(self, batch: RLBatch) -> list[str]:
        """[B] the model's answer to each prompt (the reference answer in oracle mode)."""
        from vinci.generation import sample

        if self.oracle:
            missing = [i for i, answer in enumerate(batch.answers) if not answer]
            if missing:
                raise ValueError(f"oracle mode needs reference programs; {batch.sources[missing[0]] if batch.sources else missing[0]} has none")
            return list(batch.answers)
        if self.engine == "vllm":
            from vinci.engines.vllm_sampling import VLLMRollouts

            if self.rollouts is None:
                self.rollouts = VLLMRollouts.for_module(self.vllm, self, self.generation["max_new_tokens"])
            g = self.generation
            return self.rollouts.sample(self, batch, 1, g["max_new_tokens"], 0, g["do_sample"], g["temperature"], g["top_p"]).texts
        return sample(self.model, self.processor, batch.inputs, num_samples=1, **self.generation).texts

    def _evaluate(self, batch: RLBatch, batch_idx: int):
        if not isinstance(batch, RLBatch):
            raise TypeError(f"EvalModule needs RL batches, got {type(batch).__name__}: set data.stage: rl")
        ids = self._ids(batch, batch_idx)
        texts = self.answer(batch)
        scored = score_samples(
            texts,
            batch.languages,
            batch.images,
            self.pool,
            self.visual,
            reference_traces=self._reference_traces(batch, ids),
            reference_blocks=self._reference_blocks(batch, ids),
            format_weight=self.format_weight,
        )
        return ids, texts, scored

    def _ids(self, batch: RLBatch, batch_idx: int) -> list[str]:
        ids = list(getattr(batch, "ids", []) or [])
        if len(ids) != len(batch.images):
            ids = [f"batch{batch_idx}-{i}" for i in range(len(batch.images))]
        return [safe_id(i) for i in ids]

    def _log_step(self, batch: RLBatch, scored, stage: str) -> None:
        self.scores.update(batch.languages, scored.scores)
        self.scores.log_to(self, stage, batch_size=len(batch.images))

    def validation_step(self, batch: RLBatch, batch_idx: int) -> None:
        _, _, scored = self._evaluate(batch, batch_idx)
        self._log_step(batch, scored, "val")

    def test_step(self, batch: RLBatch, batch_idx: int) -> None:
        _, _, scored = self._evaluate(batch, batch_idx)
        self._log_step(batch, scored, "test")

    def on_validation_epoch_end(self) -> None:
        self.scores.reset()

    def on_test_epoch_end(self) -> None:
        self.scores.reset()

    def predict_step(self, batch: RLBatch, batch_idx: int) -> list[Prediction]:
        ids, texts, scored = self._evaluate(batch, batch_idx)
        sources = list(getattr(batch, "sources", []) or []) or ids
        return [
            Prediction(
                id=ids[i],
                source=sources[i],
                language=batch.languages[i],
                prompt=batch.prompts[i],
                text=texts[i],
                code=scored.codes[i],
                scores=scored.scores[i],
                render_error=scored.errors[i],
                render=scored.renders[i],
                reference=batch.images[i],
            )
            for i in range(len(texts))
        ]

    def configure_optimizers(self):
        raise RuntimeError("EvalModule only evaluates: use `validate`, `test` or `predict`, not `fit`")

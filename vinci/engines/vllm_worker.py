"""The vLLM rollout worker: a process in vLLM's own environment that samples for vinci.

vLLM pins torch and transformers versions that vinci's environment does not have, so it never
runs inside vinci; vinci starts this script with the vLLM environment's interpreter
(`vinci.engines.vllm.VLLMEngine`) and talks to it over a local socket authenticated with a
random key. It imports nothing from vinci, only the standard library, Pillow and vLLM.

    vinci -> worker   ("generate", {...}), ("sleep", {}), ("wake_up", {}), ("shutdown", {})
    worker -> vinci   ("ok", result) or ("error", traceback)

Prompts arrive as templated text (or token ids) plus PNG images; results go back as plain
lists: the prompt ids vLLM built, and per sample the token ids, each sampled
token's log-prob after temperature and top-p (`logprobs_mode="processed_logprobs"`) and the
finish reason. The model's own generation config is ignored (`generation_config="vllm"`): the
sampling settings are exactly what vinci sends, as in vinci.generation.
"""

from __future__ import annotations

import io
import json
import os
import sys
import traceback
from multiprocessing.connection import Client


def build(settings: dict):
    from vllm import LLM

    args = dict(
        model=settings["model"],
        tokenizer=settings.get("tokenizer") or settings["model"],
        dtype=settings.get("dtype", "auto"),
        seed=settings.get("seed", 0),
        max_model_len=settings.get("max_model_len"),
        logprobs_mode="processed_logprobs",
        generation_config="vllm",
        enable_prefix_caching=False,
        limit_mm_per_prompt={"image": settings.get("images_per_prompt", 1)},
    )
    if settings.get("kv_cache_bytes"):
        args["kv_cache_memory_bytes"] = int(settings["kv_cache_bytes"])
    if settings.get("lora_rank"):
        args.update(enable_lora=True, max_lora_rank=settings["lora_rank"], max_loras=1,
                    enable_tower_connector_lora=bool(settings.get("tower_lora")))
    if settings.get("quantization"):
        args["quantization"] = settings["quantization"]
    if settings.get("sleep"):
        args["enable_sleep_mode"] = True
    if settings.get("gpu_memory_utilization"):
        args["gpu_memory_utilization"] = settings["gpu_memory_utilization"]
    if settings.get("enforce_eager"):
        args["enforce_eager"] = True
    return LLM(**{k: v for k, v in args.items() if v is not None})


def generate(llm, requests: list[dict], params: dict, lora: dict | None) -> list[dict]:
    """requests: [{prompt or prompt_token_ids, images: [png bytes], seed}]; params: SamplingParams fields
    shared by every request; lora: {name, id, path} or None. One result per request."""
    from PIL import Image
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    banned = {int(t): -1e4 for t in params.pop("banned_token_ids", [])}  # exp(-1e4) is 0 in float32
    prompts, sampling = [], []
    for request in requests:
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in request["images"]]
        prompt = {"prompt": request["prompt"]} if "prompt" in request else {"prompt_token_ids": request["prompt_token_ids"]}
        if images:
            prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        prompts.append(prompt)
        sampling.append(SamplingParams(**params, seed=request.get("seed"), logit_bias=banned or None,
                                       logprobs=0, detokenize=False, skip_special_tokens=False))
    lora_request = LoRARequest(lora["name"], lora["id"], lora["path"]) if lora else None
    outputs = llm.generate(prompts, sampling, lora_request=lora_request, use_tqdm=False)
    results = []
    for output in outputs:
        samples = []
        for completion in output.outputs:
            ids = list(completion.token_ids)
            logprobs = [step[token].logprob for step, token in zip(completion.logprobs or [], ids)]
            samples.append({"token_ids": ids, "logprobs": logprobs, "finish_reason": completion.finish_reason})
        results.append({"prompt_token_ids": list(output.prompt_token_ids), "samples": samples})
    return results


def sleep(llm) -> None:
    """Free the KV cache and move the weights to host memory (GPU), after dropping the
    multimodal cache, so the trainer gets the card while it scores and updates."""
    llm.reset_mm_cache()
    llm.sleep(level=1)


def wake_up(llm) -> None:
    llm.wake_up()


def main() -> int:
    host, port = os.environ["VINCI_WORKER_ADDRESS"].rsplit(":", 1)
    key = bytes.fromhex(os.environ["VINCI_WORKER_KEY"])
    settings = json.loads(os.environ["VINCI_WORKER_SETTINGS"])
    conn = Client((host, int(port)), authkey=key)
    try:
        llm = build(settings)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return 1
    conn.send(("ok", None))  # loaded: ready for requests
    handlers = {"generate": generate, "sleep": sleep, "wake_up": wake_up}
    while True:
        try:
            command, kwargs = conn.recv()
        except EOFError:  # vinci went away
            return 0
        if command == "shutdown":
            conn.send(("ok", None))
            return 0
        try:
            conn.send(("ok", handlers[command](llm, **kwargs)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


if __name__ == "__main__":  # vLLM spawns its engine core, which re-imports this file
    sys.exit(main())

# make demo   set up, then run the main job on the embedded default
# make test   set up (vinci's .venv and the vLLM engine's .venv-vllm), then run the test suite (what CI runs)
VENV ?= .venv
PY := $(VENV)/bin/python
VLLM_VENV ?= .venv-vllm

.PHONY: setup system vllm-env demo test sft virl clean

setup: $(VENV)/.installed system

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

system:
	bash .ci/system-packages.sh

# the vLLM rollout engine's own environment (sampler.engine: vllm)
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: .ci/vllm-env.sh
	bash .ci/vllm-env.sh $(VLLM_VENV)
	touch $@

sft: setup
	$(PY) main.py fit --config configs/sft.yaml

virl: sft
	$(PY) main.py fit --config configs/virl.yaml

demo: virl
	$(PY) -m benchmarks.heldout --adapters sft=runs/sft/adapter virl=runs/virl/adapter

test: setup vllm-env
	$(PY) -m pytest tests -q -p no:cacheprovider --timeout 900 --durations 40

clean:
	rm -rf runs artifacts lightning_logs

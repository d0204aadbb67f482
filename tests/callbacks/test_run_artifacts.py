"""What a crash or a second run leaves behind: whole adapters and models, or the previous ones.

Kills here are real SIGKILLs of a child process in the middle of a write.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from callbacks.adapter import AdapterExport
from callbacks.run_lock import LOCK_NAME, RunDirectoryInUse, RunLock
from vinci.backbone import resolve_adapter
from vinci.tiny import STAMP, is_built

FORK = multiprocessing.get_context("fork")


class FakeModel:
    """Writes a PEFT-shaped folder; with `die`, SIGKILLs its process halfway through."""

    def __init__(self, tag: str, die: bool = False):
        self.tag, self.die = tag, die

    def save_pretrained(self, out) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_model.safetensors").write_text(self.tag)
        if self.die:
            (out / "adapter_config.json").write_text("")  # the 0-byte config the issue found
            os.kill(os.getpid(), signal.SIGKILL)
        (out / "adapter_config.json").write_text(json.dumps({"tag": self.tag}))


class FakeProcessor:
    def save_pretrained(self, out) -> None:
        (Path(out) / "tokenizer.json").write_text("{}")


def module(tag: str, die: bool = False):
    return SimpleNamespace(model=FakeModel(tag, die), processor=FakeProcessor(), backbone=None)


def trainer(step: int, root: Path):
    return SimpleNamespace(is_global_zero=True, global_step=step, default_root_dir=str(root))


def tag(folder: Path) -> str:
    return json.loads((folder / "adapter_config.json").read_text())["tag"]


def test_adapters_are_kept_per_checkpoint_and_last_follows_the_newest(tmp_path):
    export = AdapterExport(dirpath=str(tmp_path / "adapter"))
    for step in (10, 20):
        export.on_save_checkpoint(trainer(step, tmp_path), module(f"s{step}"), {})
    export.on_fit_end(trainer(20, tmp_path), module("would-overwrite"))  # same step, same weights: not rewritten
    root = tmp_path / "adapter"
    assert tag(root / "step_10") == "s10" and tag(root / "step_20") == "s20"
    assert (root / "last").is_symlink() and tag(root / "last") == "s20"
    assert resolve_adapter(root) == root / "last"


def test_keep_steps_prunes_the_oldest(tmp_path):
    export = AdapterExport(dirpath=str(tmp_path / "adapter"), keep_steps=2)
    for step in (1, 2, 3):
        export.on_save_checkpoint(trainer(step, tmp_path), module(f"s{step}"), {})
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["last", "step_2", "step_3"]


def test_a_kill_during_the_adapter_export_leaves_the_previous_adapter_whole(tmp_path):
    root = tmp_path / "adapter"
    AdapterExport(dirpath=str(root)).on_save_checkpoint(trainer(10, tmp_path), module("s10"), {})

    def killed_export():
        AdapterExport(dirpath=str(root)).on_save_checkpoint(trainer(20, tmp_path), module("s20", die=True), {})

    child = FORK.Process(target=killed_export)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert not (root / "step_20").exists()  # the half-written folder never took the name
    assert tag(resolve_adapter(root)) == "s10"  # the next stage loads the last whole adapter
    AdapterExport(dirpath=str(root)).setup(trainer(10, tmp_path), None, "fit")  # the next run cleans up
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_10"]


def test_a_second_fit_into_a_live_run_directory_stops_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
            "print('held', flush=True); time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirectoryInUse, match=f"PID {holder.pid}"):
            RunLock().setup(trainer(0, tmp_path), None, "fit")
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock()  # a dead holder's lock is gone with it: no stale file to clean by hand
    lock.setup(trainer(0, tmp_path), None, "fit")
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    with pytest.raises(RunDirectoryInUse):
        RunLock().setup(trainer(0, tmp_path), None, "fit")
    lock.on_exception(trainer(0, tmp_path), None, RuntimeError("a failed fit"))
    RunLock().setup(trainer(0, tmp_path), None, "fit")  # released when a fit fails, too


def _build(out: str, die: bool) -> None:
    """Build the embedded model; with `die`, SIGKILL the process once the weights are written."""
    from transformers import ProcessorMixin

    from vinci.backbone import Backbone, ensure_model

    if die:
        ProcessorMixin.save_pretrained = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    ensure_model(Backbone(model=out, embedded=True))


def test_embedded_model_builds_are_atomic_and_redone_when_killed(tmp_path):
    from dataclasses import asdict

    from vinci.tiny import TinySpec

    out = tmp_path / "tiny"
    stamp = asdict(TinySpec())
    killed = FORK.Process(target=_build, args=(str(out), True))  # dies between the weights and the processor
    killed.start()
    killed.join(120)
    assert killed.exitcode == -signal.SIGKILL
    assert not out.exists() or is_built(out, stamp)  # never a half-written model under the name

    out.mkdir(exist_ok=True)
    (out / "config.json").write_text("{}")  # what the old check trusted: config.json, no stamp
    racers = [FORK.Process(target=_build, args=(str(out), False)) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(300)
    assert [r.exitcode for r in racers] == [0, 0]
    assert is_built(out, stamp) and any((out / name).is_file() for name in ("processor_config.json", "preprocessor_config.json"))
    assert json.loads((out / STAMP).read_text()) == stamp
    assert not list(tmp_path.glob(".tiny.*"))  # no leftovers beside it


def test_a_kill_during_a_checkpoint_save_leaves_nothing_in_the_system_temp_dir(tmp_path, monkeypatch):
    import tempfile

    import torch

    from vinci.checkpoint_io import LocalAtomicCheckpointIO

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    target = tmp_path / "checkpoints" / "last.ckpt"
    LocalAtomicCheckpointIO().save_checkpoint({"step": 1}, target)

    def killed_save():
        tempfile.tempdir = str(system_tmp)  # where Lightning's fsspec transaction would stage it
        real_save = torch.save

        def save_then_die(obj, handle):
            real_save(obj, handle)
            os.kill(os.getpid(), signal.SIGKILL)  # written, not yet renamed

        torch.save = save_then_die
        LocalAtomicCheckpointIO().save_checkpoint({"step": 2, "big": torch.zeros(1000)}, target)

    child = FORK.Process(target=killed_save)
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert list(system_tmp.iterdir()) == []
    assert torch.load(target, weights_only=False)["step"] == 1  # the previous checkpoint stands
    assert len(list(target.parent.glob(".last.ckpt.partial-*"))) == 1  # the killed run's staging file...
    LocalAtomicCheckpointIO().save_checkpoint({"step": 3}, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # ...is removed by the next save
    assert torch.load(target, weights_only=False)["step"] == 3


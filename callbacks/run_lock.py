"""RunLock: one live fit per run directory.

Two fits writing into the same `trainer.default_root_dir` would interleave their checkpoints and
adapters, and both exit 0. The first fit holds an advisory lock on `<run dir>/.fit.lock` (with
its PID inside) until it ends; a second one stops at setup with an error naming the holder. The
kernel drops the lock when the holder dies, so a killed run leaves nothing to clean up.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

import lightning as L

LOCK_NAME = ".fit.lock"


class RunDirectoryInUse(RuntimeError):
    pass


class RunLock(L.Callback):
    def __init__(self) -> None:
        self.handle: Optional[int] = None  # the open lock file's descriptor while held

    def setup(self, trainer, module, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.handle is not None:
            return
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_NAME
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise RunDirectoryInUse(
                f"{run_dir} is in use by a live fit (PID {holder}, lock {path}); wait for it, or give this run "
                "its own --trainer.default_root_dir (and checkpoint/adapter dirpaths)"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        self.handle = handle

    def teardown(self, trainer, module, stage: str) -> None:
        if stage == "fit":
            self.release()

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        self.release()  # Lightning skips `teardown` when a fit raises

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            os.close(self.handle)
            self.handle = None

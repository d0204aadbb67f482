"""Peak bytes of live tensors on any device: a CPU stand-in for `torch.cuda.max_memory_allocated`.

`LiveTensorBytes` is a `TorchDispatchMode`. While it is active, every tensor that an ATen op
returns (forward, backward and optimizer ops alike; composite ops are seen as the ops they
decompose into) is counted once per storage, so views and in-place results add nothing, until
the storage is freed. Tensors already alive when it starts (weights, 4-bit quantisation
constants, optimizer state, inputs) are found by a scan of the garbage collector's objects and
counted as the baseline. `peak` is the most bytes alive at any moment.

Why not RSS: glibc keeps freed heap pages, so RSS after a large temporary stays high and its peak
mixes fragmentation with what was needed.

What it does not see, so that it reads a little below a CUDA figure: scratch memory a kernel
allocates and frees inside one op (a fused attention kernel's workspace), allocator rounding and
caching, and memory outside torch tensors (Python objects, images, library buffers).

    with LiveTensorBytes() as tracker:
        loss = model(**inputs).loss
        loss.backward()
    print(tracker.baseline, tracker.peak)  # bytes
"""

from __future__ import annotations

import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def storage_of(tensor: torch.Tensor):
    """The tensor's untyped storage, or None for tensors that have none we can count."""
    if tensor.device.type == "meta" or tensor.layout != torch.strided:
        return None
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # wrapper subclasses without a real storage
        return None


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of live tensor storages while active; `peak`, `current`, `baseline` in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self._sizes: dict[int, int] = {}  # id(storage) -> bytes counted for it
        self._finalizers: dict[int, weakref.finalize] = {}
        self.current = 0
        self.peak = 0
        self.baseline = 0
        self.peak_op = ""  # the op whose output set the peak, with its output shapes

    def __enter__(self) -> "LiveTensorBytes":
        for obj in gc.get_objects():
            if issubclass(type(obj), torch.Tensor):  # type(), not isinstance: no proxy objects' __class__
                self.add(obj)
        self.baseline = self.peak = self.current
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        for finalizer in self._finalizers.values():  # stop counting; nothing stays registered
            finalizer.detach()
        self._finalizers.clear()
        self._sizes.clear()

    def reset_peak(self) -> None:
        """Start a new peak from what is alive now."""
        self.peak = self.current
        self.peak_op = ""

    def add(self, tensor: torch.Tensor) -> bool:
        """Count the tensor's storage if new (or resized); True when that set a new peak."""
        storage = storage_of(tensor)
        if storage is None:
            return False
        key, size = id(storage), storage.nbytes()
        known = self._sizes.get(key)
        if known is None:  # storages keep their Python object while alive, so `finalize` fires on free
            self._finalizers[key] = weakref.finalize(storage, self._free, key)
        self._sizes[key] = size
        self.current += size - (known or 0)  # a resized storage counts at its new size
        if self.current <= self.peak:
            return False
        self.peak = self.current
        return True

    def _free(self, key: int) -> None:
        self.current -= self._sizes.pop(key, 0)
        self._finalizers.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [value for value in tree_flatten(out)[0] if isinstance(value, torch.Tensor)]
        if any([self.add(t) for t in tensors]):  # a list, not a generator: count every output
            self.peak_op = f"{func} -> {[tuple(t.shape) for t in tensors]}"
        return out

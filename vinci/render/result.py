"""The value every render returns: an image, or a short reason why there is none."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from PIL import Image

# Why a render failed. None when it succeeded.
FailureKind = Literal["timeout", "crash", "no-output", "syntax", "limit", "unsupported"]
FAILURE_KINDS = ("timeout", "crash", "no-output", "syntax", "limit", "unsupported")


@dataclass
class RenderResult:
    ok: bool
    image: Optional[Image.Image]  # RGB on white when ok, else None
    error: Optional[str] = None  # short and human-readable, None when ok
    seconds: float = 0.0  # wall-clock time of the job
    kind: Optional[FailureKind] = None  # failure kind, None when ok
    language: str = ""  # canonical language the job was rendered as
    trace: Optional[dict] = None  # call trace of a python job rendered with trace=True (see render.trace)

    @classmethod
    def failure(cls, kind: FailureKind, error: str, seconds: float = 0.0, language: str = ""):
        return cls(False, None, error, seconds, kind, language)


class RenderFailure(BaseException):
    """Raised inside a job process to end it with a classified failure.

    It derives from BaseException so that a program's own `except Exception:` cannot swallow
    a limit the renderer enforces (for example an oversize figure inside `savefig`).
    """

    def __init__(self, kind: FailureKind, error: str):
        super().__init__(error)
        self.kind = kind
        self.error = error

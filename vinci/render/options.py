"""What a render job is and how it is drawn: plain dataclasses that YAML configs can build.

`RenderOptions` holds the output settings of every language in one flat dataclass, so a
LightningCLI config can set it with `init_args` and a worker can receive it as JSON.
`SandboxLimits` holds the per-job resource limits the sandbox enforces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional


# Worker processes come in three kinds: matplotlib (`chart`), cairosvg + TeX (`light`), and
# Chromium (`browser`).
WORKER_KINDS = ("chart", "light", "browser")


def worker_kind(language: str) -> str:
    """Which kind of worker serves a canonical language."""
    return {"python": "chart", "html": "browser"}.get(language, "light")


@dataclass
class RenderOptions:
    """Output settings for the four renderers. Every render is RGB on white."""

    python_dpi: int = 100
    """Dots per inch for matplotlib figures (the program's own savefig dpi is ignored)."""
    python_max_inches: float = 60.0
    """Largest figure side in inches; a bigger figure fails with kind 'limit'."""
    svg_width: Optional[int] = None
    """Output width in pixels for SVG; None keeps the document's own size (or derives it
    from svg_height, keeping the aspect ratio). VinciCoder and UniSVG use 336."""
    svg_height: Optional[int] = None
    """Output height in pixels for SVG; None keeps the aspect ratio."""
    html_width: int = 1280
    """Browser viewport width in CSS pixels (device scale factor 1)."""
    html_height: int = 720
    """Browser viewport height; the screenshot is at least this tall."""
    html_full_page: bool = True
    """Capture the whole scrollable page instead of only the viewport."""
    html_max_height: int = 4096
    """Cap on the full-page screenshot height: taller pages are cut, not failed."""
    latex_dpi: int = 150
    """Resolution at which pdftoppm rasterises the first PDF page."""
    max_pixels: int = 4096 * 4096
    """Largest width*height of any render; bigger images fail with kind 'limit'."""
    max_side: int = 16384
    """Largest width or height of any render in pixels."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RenderOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def check_size(self, width: int, height: int) -> Optional[str]:
        """A short reason when a width x height image breaks the caps, else None."""
        if width <= 0 or height <= 0:
            return f"image is empty ({width}x{height} px)"
        if max(width, height) > self.max_side or width * height > self.max_pixels:
            return (
                f"image would be {width}x{height} px; the cap is {self.max_pixels} pixels "
                f"and {self.max_side} px per side"
            )
        return None


@dataclass
class SandboxLimits:
    """Resource limits applied to every job. HTML jobs run in a warm Chromium, which gets
    `html_memory_mb` instead of the other rlimits (an address-space cap breaks Chromium, which
    reserves tens of GiB it never touches)."""

    memory_mb: int = 4096
    """Address-space limit per job process (RLIMIT_AS)."""
    file_mb: int = 64
    """Largest file a job may write (RLIMIT_FSIZE)."""
    scratch_mb: int = 256
    """Total bytes a job may write (its directory, /tmp, /var/tmp and /dev/shm share one
    fresh tmpfs of this size, wiped after the job); a write past it fails with ENOSPC."""
    open_files: int = 512
    """Open file descriptors per job process (RLIMIT_NOFILE)."""
    processes: int = 256
    """Processes per user (RLIMIT_NPROC); the kernel ignores it for root."""
    html_memory_mb: int = 2048
    """Writable memory per Chromium process (RLIMIT_DATA), and a quarter of it for the
    JavaScript heap (V8's old space). A page that asks for more gets failed allocations or
    a crashed tab, never the machine's memory. At 1 GiB Chromium crashes even on an empty page."""
    output_bytes: int = 64 * 1024
    """stdout+stderr kept per job; a job that writes more gets a broken pipe."""
    grace_s: float = 15.0
    """Extra seconds the pool waits for a worker beyond the job timeout (worker start-up,
    browser restart) before it kills and replaces the worker."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SandboxLimits":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class RenderJob:
    """One program to render. `timeout` None uses the pool's timeout; `options` None the
    pool's options. `trace` (python only; ignored for other languages): also return the
    call trace of the figure in `RenderResult.trace` (see `vinci.render.trace`)."""

    language: str
    code: str
    timeout: Optional[float] = None
    options: Optional[RenderOptions] = None
    trace: bool = False

"""Render a matplotlib program: run it (Agg backend) and capture the figure it draws.

Runs inside a job process. Whatever the program does, the figure is captured:
- `plt.savefig`/`fig.savefig` to any path or format (ChartMimic scripts save `NAME.pdf`) is
  intercepted: the figure is rasterised at `RenderOptions.python_dpi` with the program's
  `bbox_inches`/`pad_inches`/colour arguments, and nothing is written to disk;
- `plt.show()` captures the current figure;
- a program that does neither gets its last open figure captured when it ends.
The last capture wins. Simplification: only one figure is returned, and the program's own
savefig `dpi` is ignored so that every render of a program has the same resolution.
With a `CallTracer` (see `trace`), the plotting calls are recorded while the program runs and
each capture also reads the call trace off the figure it rasterised.
Plotly (`write_image`) is out of scope and fails with kind 'unsupported'.
`matplotlib.cm.get_cmap(name, lut)`, removed in matplotlib 3.9 but common in older chart code
(and so in what models write), is put back for the program's run when the installed
matplotlib lacks it, with the old meaning: the named colormap, resampled to `lut` colours.
"""

from __future__ import annotations

import builtins
import importlib.abc
import io
import sys
import traceback
from contextlib import ExitStack, contextmanager
from typing import Optional

from PIL import Image

from vinci.render.options import RenderOptions
from vinci.render.protocol import on_white
from vinci.render.result import RenderFailure
from vinci.render.trace import CallTracer

SAVE_KWARGS = ("bbox_inches", "pad_inches", "facecolor", "edgecolor", "transparent", "bbox_extra_artists")
UNSUPPORTED = ("plotly", "kaleido", "bokeh", "altair")


WARM_IMPORTS = ("numpy", "scipy.stats", "pandas", "matplotlib.tri", "mpl_toolkits.mplot3d")
WARM_UP_CHART = r"""
import numpy as np
import matplotlib.pyplot as plt
fig, (ax, bx) = plt.subplots(1, 2, figsize=(6, 3))
x = np.linspace(0, 1, 20)
ax.plot(x, x ** 2, "o-", label=r"$\alpha^2 \frac{x}{2}$")
ax.bar([1, 2], [3, 4], hatch="//")
ax.set_title("Title", fontweight="bold", fontsize=14)
ax.legend()
im = bx.imshow(np.eye(4), cmap="viridis")
fig.colorbar(im, ax=bx)
bx.annotate("text", (1, 1), arrowprops=dict(arrowstyle="->"))
plt.tight_layout()
plt.savefig("warm.pdf", bbox_inches="tight")
"""


def preload() -> None:
    """Import what charts use and draw one throwaway chart (fonts, mathtext parser,
    colorbars), so every forked job starts warm. Optional libraries are skipped if absent."""
    import importlib

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    render_python(WARM_UP_CHART, RenderOptions())
    plt.close("all")


class _BlockUnsupported(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in UNSUPPORTED:
            raise RenderFailure(
                "unsupported",
                f"{fullname} is not supported (plotly write_image is out of scope); "
                "draw the chart with matplotlib",
            )
        return None


class FigureCapture:
    """Intercepts savefig/show and keeps the last rasterised figure (and, with a tracer, the
    last figure's call trace)."""

    def __init__(self, options: RenderOptions, tracer: Optional[CallTracer] = None):
        self.options = options
        self.tracer = tracer
        self.image: Optional[Image.Image] = None
        self.failure: Optional[RenderFailure] = None
        self._savefig = None

    def grab(self, figure, save_kwargs: dict) -> None:
        dpi = self.options.python_dpi
        width_in, height_in = figure.get_size_inches()
        width, height = int(round(width_in * dpi)), int(round(height_in * dpi))
        reason = self.options.check_size(width, height)
        if reason is None and max(width_in, height_in) > self.options.python_max_inches:
            reason = f"figure is {width_in:g}x{height_in:g} in; the cap is {self.options.python_max_inches:g} in"
        if reason:
            self.failure = RenderFailure("limit", reason)
            raise self.failure
        kwargs = {k: save_kwargs[k] for k in SAVE_KWARGS if k in save_kwargs}
        buffer = io.BytesIO()
        if self.tracer is not None:
            self.tracer.collect_texts()
        self._savefig(figure, buffer, format="png", dpi=dpi, pil_kwargs={"compress_level": 1}, **kwargs)
        image = Image.open(buffer)
        reason = self.options.check_size(*image.size)
        if reason:
            self.failure = RenderFailure("limit", reason)
            raise self.failure
        self.image = on_white(image)
        if self.tracer is not None:
            self.tracer.capture(figure)

    @contextmanager
    def installed(self):
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure

        capture = self
        self._savefig = Figure.savefig
        originals = plt.savefig, plt.show

        def savefig(figure, *args, **kwargs):
            capture.grab(figure, kwargs)

        def pyplot_savefig(*args, **kwargs):  # pyplot's own version redraws afterwards
            capture.grab(plt.gcf(), kwargs)

        def show(*args, **kwargs):
            if plt.get_fignums():
                capture.grab(plt.gcf(), {})

        blocker = _BlockUnsupported()
        Figure.savefig, plt.savefig, plt.show = savefig, pyplot_savefig, show
        sys.meta_path.insert(0, blocker)
        try:
            with ExitStack() as stack:
                if self.tracer is not None:
                    stack.enter_context(self.tracer.installed())
                yield self
        finally:
            Figure.savefig = self._savefig
            plt.savefig, plt.show = originals
            sys.meta_path.remove(blocker)


@contextmanager
def legacy_get_cmap():
    """`matplotlib.cm.get_cmap` for the duration of a program, when matplotlib no longer has it."""
    import matplotlib
    import matplotlib.cm as cm

    if hasattr(cm, "get_cmap"):
        yield
        return

    def get_cmap(name=None, lut=None):
        cmap = name
        if not isinstance(cmap, matplotlib.colors.Colormap):
            cmap = matplotlib.colormaps[name or matplotlib.rcParams["image.cmap"]]
        return cmap.resampled(lut) if lut is not None else cmap

    cm.get_cmap = get_cmap
    try:
        yield
    finally:
        del cm.get_cmap


def _describe(error: BaseException) -> str:
    """'NameError: name 'x' is not defined (line 12)' from the program's own frames."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename == "<program>":
            line = frame.lineno
    text = f"{type(error).__name__}: {error}".strip()
    text = text if len(text) <= 240 else text[:237] + "..."
    return f"{text} (line {line})" if line else text


def render_python(code: str, options: RenderOptions, tracer: Optional[CallTracer] = None) -> Image.Image:
    """Run a matplotlib program and return its figure as RGB on white. With `tracer`, the
    captured figure's call trace is left in `tracer.trace`."""
    import matplotlib.pyplot as plt

    try:
        program = compile(code, "<program>", "exec")
    except (SyntaxError, ValueError) as error:
        where = f" (line {error.lineno})" if getattr(error, "lineno", None) else ""
        raise RenderFailure("syntax", f"{type(error).__name__}: {getattr(error, 'msg', error)}{where}")
    capture = FigureCapture(options, tracer)
    with capture.installed(), legacy_get_cmap():
        try:
            exec(program, {"__name__": "__main__", "__builtins__": builtins})
        except SystemExit:
            pass  # sys.exit() ends the program; whatever it drew still counts
        except RenderFailure:
            raise
        except MemoryError:
            raise RenderFailure("limit", "memory limit exceeded")
        except BaseException as error:
            raise RenderFailure("crash", _describe(error))
        if capture.failure is not None:  # the program caught our limit error
            raise capture.failure
        if capture.image is None and plt.get_fignums():
            capture.grab(plt.gcf(), {})
    if capture.image is None:
        raise RenderFailure("no-output", "the program drew no matplotlib figure")
    return capture.image

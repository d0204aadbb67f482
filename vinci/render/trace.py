"""Trace what a matplotlib program draws, for ChartMimic-style low-level chart F1.

Method. While the program runs in its job process, every public plotting method of `Axes`
(and of `Axes3D`, which overrides several) is wrapped. A wrapped call made while no other
wrapped call is running is recorded (outermost only: `hist` calls `bar`, `boxplot` calls
`plot`; only `hist` and `boxplot` are recorded) with its type name and the artists it added
to its axes. When the figure is captured, the trace is read off that figure, after drawing:

    calls   [{"type": str, "colors": [hex, ...]}]  in call order; the type is the method name
            ("plot", "hist", "bar3d"), prefixed with the projection for non-rectilinear axes
            ("polar:plot", "3d:scatter"); colours are those of the call's artists as drawn, one
            per element (a line, each bar or wedge, each face of a collection), '#rrggbb'
    texts   [str]  every visible, non-empty Text that drew in the capture's draw (titles,
            labels, tick labels in view, legend entries, annotations, pie labels)
    layout  [[nrows, ncols, row_start, row_stop, col_start, col_stop]]  one per axes, from its
            SubplotSpec (stops exclusive, like `range`)

Colours are resolved at capture, so `bar.set_color(...)` after the call counts and a
colour-mapped scatter or mesh reports its mapped colours.

Simplifications:
- only calls on the captured figure's axes count; calls on colorbar axes (a colorbar draws
  itself with `pcolormesh`) are dropped, as are calls whose artists were all removed again;
- alpha is ignored; a face with alpha 0 reports its edge colour instead;
- an image from a 2-D array reports its colormap sampled at 8 points; an RGB image reports
  no colour; a large collection is sampled at evenly spaced elements (MAX_COLORS_PER_CALL);
- `ax.text`, `annotate`, legends and tables are not calls; `add_patch`/`add_artist`/
  `add_collection`/`add_line` are, when the program itself adds a shape with them;
- layout: colorbar axes are skipped, a twin axes shares its host's cell, an axes without a
  SubplotSpec (`fig.add_axes`) lying inside another axes is an inset and skipped, otherwise it
  counts as a 1x1 grid cell [1, 1, 0, 1, 0, 1]; an axes a colorbar squeezed into a nested
  grid keeps its original cell; other nested grids report their own (inner) geometry.

The trace also carries `chartmimic`: {texts, types, colors, layout}, what ChartMimic's own
low-level evaluator sees of the chart, recorded by `vinci.eval.chartmimic_record` in the same
run (see there for the definitions); `vinci.eval.chartmimic` scores it.

Outside the job process a trace is untrusted data: `clean_trace` checks every type and caps
every size; the job, the worker and the pool each apply it. Nothing here imports matplotlib
at module import time.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import Any, Optional

MAX_CALLS = 256  # calls kept in a trace
MAX_RECORDED = 8192  # calls remembered while the program runs (a loop of plot calls stops here)
MAX_COLORS_PER_CALL = 256  # element colours per call
MAX_COLORS = 1024  # element colours per trace (colour matching is cubic in this)
MAX_TEXTS = 512  # texts per trace
MAX_TEXT_CHARS = 100  # characters per text
MAX_AXES = 64  # layout cells per trace
MAX_TYPE_CHARS = 48
MAX_GRID = 1000  # largest row/column number a layout cell may hold
CMAP_SAMPLES = 8  # colours reported for a colour-mapped image
MAX_CM_TEXTS = 768  # ChartMimic texts per trace (an annotated heatmap draws one per cell; the
# whole trace must stay under the frame protocol's 1 MiB header even with \uXXXX-escaped texts)
MAX_CM_TYPES = 1024  # ChartMimic type calls per trace
MAX_CM_COLORS = 512  # ChartMimic colour entries per trace
MAX_NAME_CHARS = 64  # a colour's group or colormap name

# Plotting methods traced on Axes (and on Axes3D where it defines its own).
PLOT_METHODS = (
    "plot", "scatter", "bar", "barh", "broken_barh", "hist", "hist2d", "pie", "fill",
    "fill_between", "fill_betweenx", "stackplot", "stairs", "step", "stem", "errorbar",
    "boxplot", "bxp", "violinplot", "violin", "eventplot", "hexbin", "imshow", "matshow",
    "pcolor", "pcolormesh", "pcolorfast", "contour", "contourf", "tricontour", "tricontourf",
    "tripcolor", "triplot", "quiver", "barbs", "streamplot", "axhline", "axvline", "axhspan",
    "axvspan", "axline", "hlines", "vlines", "loglog", "semilogx", "semilogy", "specgram",
    "psd", "csd", "cohere", "magnitude_spectrum", "angle_spectrum", "phase_spectrum",
    "acorr", "xcorr", "spy", "ecdf",
    # Axes3D only
    "bar3d", "plot_surface", "plot_wireframe", "plot_trisurf", "voxels",
)  # fmt: skip
# Direct additions of drawn shapes (a heatmap of circles, a donut's centre): recorded like
# plotting calls when they add a patch, line or collection (not a legend, text or image).
ADDERS = ("add_patch", "add_artist", "add_collection", "add_line", "add_collection3d")
ALIASES = {"plot3D": "plot", "scatter3D": "scatter", "contour3D": "contour", "contourf3D": "contourf",
           "quiver3D": "quiver", "stem3D": "stem"}  # fmt: skip


def empty_trace() -> dict:
    return {"calls": [], "texts": [], "layout": [], "chartmimic": empty_chartmimic()}


def empty_chartmimic() -> dict:
    return {"texts": [], "types": [], "colors": [], "layout": []}


# ----------------------------------------------------------------------------- validation


def _is_hex(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 7 and value[0] == "#"
        and all(c in "0123456789abcdef" for c in value[1:])
    )  # fmt: skip


def _clean_cell(value: Any) -> Optional[list[int]]:
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_GRID for v in value):
        return None
    return list(value)


def clean_trace(trace: Any) -> Optional[dict]:
    """A well-typed trace within the caps, or None when `trace` is not a dict.

    Entries of the wrong type are dropped, lists and strings past their caps are cut. Applied
    wherever a trace crosses a process boundary, so a program that forges its own trace can
    at worst report a wrong chart, never an oversize or ill-typed one.
    """
    if not isinstance(trace, dict):
        return None
    out = empty_trace()
    calls = trace.get("calls") if isinstance(trace.get("calls"), list) else []
    budget = MAX_COLORS
    for call in calls:
        if len(out["calls"]) == MAX_CALLS:
            break
        if not isinstance(call, dict) or not isinstance(call.get("type"), str) or not call["type"]:
            continue
        colors = call.get("colors") if isinstance(call.get("colors"), list) else []
        colors = [c for c in colors if _is_hex(c)][: min(MAX_COLORS_PER_CALL, budget)]
        budget -= len(colors)
        out["calls"].append({"type": call["type"][:MAX_TYPE_CHARS], "colors": colors})
    texts = trace.get("texts") if isinstance(trace.get("texts"), list) else []
    out["texts"] = [t[:MAX_TEXT_CHARS] for t in texts if isinstance(t, str) and t][:MAX_TEXTS]
    layout = trace.get("layout") if isinstance(trace.get("layout"), list) else []
    out["layout"] = [cell for cell in map(_clean_cell, layout) if cell is not None][:MAX_AXES]
    out["chartmimic"] = _clean_chartmimic(trace.get("chartmimic"))
    return out


def _strings(value: Any, cap: int, chars: int) -> list[str]:
    return [v[:chars] for v in (value if isinstance(value, list) else []) if isinstance(v, str)][:cap]


def _clean_chartmimic(value: Any) -> dict:
    """The `chartmimic` part of a trace, checked and capped; empty when absent."""
    out = empty_chartmimic()
    if not isinstance(value, dict):
        return out
    out["texts"] = _strings(value.get("texts"), MAX_CM_TEXTS, MAX_TEXT_CHARS)  # "" is a drawn line too
    out["types"] = [t for t in _strings(value.get("types"), MAX_CM_TYPES, MAX_TYPE_CHARS) if t]
    colors = value.get("colors") if isinstance(value.get("colors"), list) else []
    out["colors"] = [
        [c[0][:MAX_NAME_CHARS], c[1][:MAX_NAME_CHARS]]
        for c in colors
        if isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(v, str) and v for v in c)
    ][:MAX_CM_COLORS]
    layout = value.get("layout") if isinstance(value.get("layout"), list) else []
    out["layout"] = [cell for cell in map(_clean_cell, layout) if cell is not None][:MAX_AXES]
    return out


# ----------------------------------------------------------------------------- recording


class _Call:
    __slots__ = ("axes", "type", "artists")

    def __init__(self, axes, type_name: str, artists: list):
        self.axes, self.type, self.artists = axes, type_name, artists


class CallTracer:
    """Records plotting calls while installed; `capture(figure)` turns them into a trace.

    `trace` holds the last capture's trace (None before any capture, or when reading the
    figure failed; `error` then says why).
    """

    def __init__(self):
        from vinci.eval.chartmimic_record import ChartMimicRecorder

        self.chartmimic = ChartMimicRecorder()
        self.calls: list[_Call] = []
        self.depth = 0  # > 0 while a traced call runs: nested calls are not recorded
        self.texts: Optional[dict[int, str]] = None  # id(Text) -> text, while a capture draws
        self.trace: Optional[dict] = None
        self.error: Optional[str] = None

    @contextmanager
    def _installed(self):
        from matplotlib.axes import Axes
        from matplotlib.axes._base import _AxesBase  # defines the add_* methods
        from matplotlib.text import Text

        classes = [_AxesBase, Axes]
        try:
            from mpl_toolkits.mplot3d import Axes3D

            classes.append(Axes3D)
        except ImportError:
            pass  # no 3D toolkit installed: 2D methods are still traced
        saved = []  # [(class, name, original)]
        for cls in classes:
            for name in PLOT_METHODS + ADDERS + tuple(ALIASES):
                original = cls.__dict__.get(name)
                if callable(original) and not isinstance(original, (staticmethod, classmethod)):
                    saved.append((cls, name, original))
                    setattr(cls, name, self._wrap(original, ALIASES.get(name, name)))
        saved.append((Text, "draw", Text.__dict__["draw"]))
        Text.draw = self._wrap_text_draw(Text.__dict__["draw"])
        try:
            yield self
        finally:
            for cls, name, original in reversed(saved):
                setattr(cls, name, original)

    @contextmanager
    def installed(self):
        """Wrap the plotting methods and Text.draw for the duration of the block (ChartMimic's
        recorder innermost, so it sees matplotlib's own functions)."""
        with self.chartmimic.installed(), self._installed():
            yield self

    def _wrap(self, method, name: str):
        from matplotlib.axes import Axes

        tracer = self

        @functools.wraps(method)
        def traced(ax, *args, **kwargs):
            if tracer.depth or not isinstance(ax, Axes):
                return method(ax, *args, **kwargs)
            children = getattr(ax, "_children", None)
            before = len(children) if isinstance(children, list) else 0
            tracer.depth += 1
            try:
                result = method(ax, *args, **kwargs)
            finally:
                tracer.depth -= 1
            children = getattr(ax, "_children", None)
            if len(tracer.calls) < MAX_RECORDED and isinstance(children, list):
                added = children[before:]
                if name not in ADDERS or any(_is_shape(a) for a in added):
                    tracer.calls.append(_Call(ax, _type_name(ax, name), added))
            return result

        return traced

    def _wrap_text_draw(self, draw):
        tracer = self

        @functools.wraps(draw)
        def traced_draw(text, renderer, *args, **kwargs):
            if tracer.texts is not None and len(tracer.texts) < MAX_TEXTS and text.get_visible():
                content = " ".join(str(text.get_text()).split())
                if content:
                    tracer.texts.setdefault(id(text), content)
            return draw(text, renderer, *args, **kwargs)

        return traced_draw

    def collect_texts(self) -> None:
        """Start recording the texts that draw (call before a capture's savefig)."""
        self.texts = {}
        self.chartmimic.collect_texts()

    def capture(self, figure) -> None:
        """Read the trace off `figure`, which has just been drawn."""
        texts, self.texts = self.texts or {}, None
        try:
            trace = {
                "calls": self._calls_on(figure),
                "texts": list(texts.values()),
                "layout": _layout(figure),
                "chartmimic": self.chartmimic.capture(figure),
            }
        except Exception as error:  # a program that broke matplotlib's getters: no trace, said why
            self.trace, self.error = None, f"trace failed: {type(error).__name__}: {error}"[:300]
            return
        self.trace, self.error = clean_trace(trace), None

    def _calls_on(self, figure) -> list[dict]:
        """[{'type', 'colors'}] of the recorded calls whose axes are drawn in `figure`."""
        from matplotlib.axes import Axes

        live = {id(ax): ax for ax in figure.findobj(lambda a: isinstance(a, Axes))}
        attached: dict[int, set[int]] = {}  # id(axes) -> ids of its current children
        out, total = [], 0
        for call in self.calls:
            if id(call.axes) not in live or hasattr(call.axes, "_colorbar"):
                continue
            if id(call.axes) not in attached:
                attached[id(call.axes)] = {id(a) for a in call.axes.get_children()}
            artists = [a for a in call.artists if id(a) in attached[id(call.axes)]]
            if call.artists and not artists:
                continue  # everything it drew was removed again (cla, remove)
            colors = _sample([c for a in artists for c in _artist_colors(a)], MAX_COLORS_PER_CALL)
            colors = colors[: max(0, MAX_COLORS - total)]
            total += len(colors)
            out.append({"type": call.type, "colors": colors})
            if len(out) == MAX_CALLS:
                break
        return out


def _is_shape(artist) -> bool:
    from matplotlib.collections import Collection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return isinstance(artist, (Collection, Line2D, Patch))


def _type_name(ax, name: str) -> str:
    projection = getattr(ax, "name", "rectilinear")
    return name if projection == "rectilinear" or not isinstance(projection, str) else f"{projection}:{name}"


# ----------------------------------------------------------------------------- colours


def _hex(rgba) -> Optional[str]:
    """'#rrggbb' of an RGB(A) tuple in [0, 1]; None when it is invisible or not finite."""
    if len(rgba) == 4 and not rgba[3] > 0:
        return None
    channels = [float(v) for v in rgba[:3]]
    if not all(math.isfinite(v) for v in channels):
        return None
    return "#" + "".join(f"{round(min(1.0, max(0.0, v)) * 255):02x}" for v in channels)


def _sample(values: list, limit: int) -> list:
    """At most `limit` values, evenly spaced over the list (first and last kept)."""
    if len(values) <= limit:
        return values
    step = (len(values) - 1) / (limit - 1)
    return [values[round(i * step)] for i in range(limit)]


def _rows(colors) -> list[str]:
    """Hex colours of the visible rows of an [N, 4] RGBA array (sampled when N is large)."""
    import numpy as np

    array = np.asarray(colors, dtype=float).reshape(-1, 4) if np.size(colors) else np.zeros((0, 4))  # [N, 4]
    if len(array) > MAX_COLORS_PER_CALL:
        array = array[np.linspace(0, len(array) - 1, MAX_COLORS_PER_CALL).round().astype(int)]
    return [h for h in map(_hex, array) if h is not None]


def _artist_colors(artist) -> list[str]:
    """Colours of one artist's elements as drawn: [hex]."""
    from matplotlib.collections import Collection
    from matplotlib.colors import to_rgba
    from matplotlib.image import AxesImage
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if not artist.get_visible():
        return []
    if isinstance(artist, Line2D):
        if artist.get_linestyle() not in ("None", "", " ") and artist.get_linewidth() > 0:
            return [h for h in [_hex(to_rgba(artist.get_color()))] if h]
        if artist.get_marker() in (None, "None", "", " "):
            return []
        face = _hex(to_rgba(artist.get_markerfacecolor()))
        return [face] if face else [h for h in [_hex(to_rgba(artist.get_markeredgecolor()))] if h]
    if isinstance(artist, Patch):
        face = _hex(artist.get_facecolor()) if artist.get_fill() else None
        edge = _hex(artist.get_edgecolor()) if artist.get_linewidth() > 0 else None
        return [face] if face else ([edge] if edge else [])
    if isinstance(artist, Collection):
        return _rows(artist.get_facecolor()) or _rows(artist.get_edgecolor())
    if isinstance(artist, AxesImage):
        import numpy as np

        array = artist.get_array()
        if array is None or np.ndim(array) != 2:
            return []
        return _rows(artist.get_cmap()(np.linspace(0.0, 1.0, CMAP_SAMPLES)))
    return []


# ----------------------------------------------------------------------------- layout


def _inside(inner, outer) -> bool:
    a, b = inner.get_position(), outer.get_position()
    return a.x0 >= b.x0 and a.y0 >= b.y0 and a.x1 <= b.x1 and a.y1 <= b.y1 and a.width * a.height < b.width * b.height


def _host_spec(spec, colorbar_grids: set[int]):
    """The SubplotSpec an axes was placed in, before a colorbar split its cell: a colorbar
    made with `ax=` moves its host into a small grid nested in the host's cell."""
    while spec is not None and id(spec.get_gridspec()) in colorbar_grids:
        spec = getattr(spec.get_gridspec(), "_subplot_spec", None)
    return spec


def _layout(figure) -> list[list[int]]:
    """[[nrows, ncols, row_start, row_stop, col_start, col_stop]] of the figure's axes."""
    colorbars = [ax for ax in figure.get_axes() if hasattr(ax, "_colorbar")]
    colorbar_grids = {id(ax.get_subplotspec().get_gridspec()) for ax in colorbars if ax.get_subplotspec() is not None}
    axes = [ax for ax in figure.get_axes() if not hasattr(ax, "_colorbar")]
    kept, cells = [], []
    for ax in axes:
        twins = getattr(ax, "_twinned_axes", None)
        if twins is not None and any(twins.joined(ax, other) for other in kept):
            continue  # twinx/twiny: drawn in its host's cell
        spec = _host_spec(ax.get_subplotspec(), colorbar_grids)
        if spec is None:
            if any(other is not ax and _inside(ax, other) for other in axes):
                continue  # an inset placed with fig.add_axes
            cells.append([1, 1, 0, 1, 0, 1])
        else:
            nrows, ncols = spec.get_gridspec().get_geometry()
            cells.append([nrows, ncols, spec.rowspan.start, spec.rowspan.stop, spec.colspan.start, spec.colspan.stop])
        kept.append(ax)
    return cells

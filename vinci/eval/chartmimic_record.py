"""What ChartMimic's low-level evaluator sees of a chart, recorded inside the render sandbox.

ChartMimic (github ChartMimic/ChartMimic, chart2code/utils/evaluator/) runs each script four
times, unsandboxed, with logging wrappers around matplotlib. vinci records the same evidence
in one sandboxed run (`vinci.render.trace.CallTracer` installs a `ChartMimicRecorder`), so
that `vinci.eval.chartmimic` scores a chart as ChartMimic does:

    texts   [str]  the strings the renderer draws, one per drawn line of a multi-line text,
            taken at the renderer (so mathtext keeps its `$`, usetex and path-effect texts are
            not seen), except the major tick labels and offset texts of every x and y axis:
            ChartMimic empties those ticks before it saves (3-D z ticks and minor ticks stay)
    types   [str]  one per outermost call of a traced drawing function, named by the file
            that defines the function and its name ("_axes.py-barh"), with "_polar" added
            for `plot` on a plain PolarAxes. "Outermost": while one traced call runs, the
            calls it makes are not counted (`hist` calls `bar`). Which functions are traced
            differs between types and colours, and so does what counts as outermost.
    colors  [[group, colour]]  distinct entries. At each outermost call the elements the
            call drew are keyed by (drawing function, colour at the call); one element is
            kept per key (the last). When the chart is captured each kept element's colour
            is read again ("#RRGGBB", uppercase; "#RRGGBBAA" when given so; or a colormap's
            name for images, meshes, contours and calls given `cmap=`), and duplicates drop.
            So a call that colours its boxes after `boxplot` counts the last box only, and
            a multi-colour collection (hlines, quiver, 3-D scatter) counts all its colours.
            If ChartMimic's colour logger would raise on the chart, the list is empty, as
            ChartMimic then has no colours.
    layout  [[nrows, ncols, row_start, row_end, col_start, col_end]]  one per axes of the
            figure that has a SubplotSpec (ends inclusive); twin axes and colorbars count.

Not covered: ChartMimic's hooks for squarify, matplotlib-venn and networkx, and its special
layout for `graph` charts. Nothing here imports matplotlib at module import time.
"""

from __future__ import annotations

import functools
import inspect
import os
from contextlib import contextmanager
from typing import Callable, Optional

MAX_RECORDED = 8192  # colour keys / type calls remembered while the program runs

TYPE, COLOR = "type", "color"
# Axes methods ChartMimic traces, and for which of its two logs.
AXES_BOTH = (
    "bar", "axhline", "axvline", "axvspan", "axhspan", "hlines", "vlines", "boxplot",
    "violinplot", "hist", "scatter", "quiver", "pie", "fill", "imshow", "pcolor", "contour",
    "contourf", "broken_barh", "tripcolor",
)  # fmt: skip
AXES_TYPE_ONLY = ("barh", "plot", "errorbar", "violin", "fill_between", "fill_betweenx")
AXES_COLOR_ONLY = ("_fill_between_x_or_y",)
AXES3D_BOTH = ("scatter", "plot", "plot_surface", "bar3d", "bar", "add_collection3d")


def to_hex(value) -> str:
    """ChartMimic's colour spelling: a '#rrggbb'/'#rrggbbaa' string as given, uppercased;
    anything else through matplotlib, alpha dropped. Raises on what it cannot spell."""
    from matplotlib.colors import to_hex as mpl_hex, to_rgba

    if isinstance(value, str):
        if value.startswith("#") and len(value) in (7, 9):
            return value.upper()
        return mpl_hex(to_rgba(value)).upper()
    if hasattr(value, "__len__") and not isinstance(value, dict) and len(value) in (3, 4):
        return mpl_hex(value).upper()
    raise ValueError(f"unsupported colour {value!r}"[:80])


# Final readers: the colours of a kept element when the chart is captured.
def _color(obj) -> list[str]:
    return [to_hex(obj.get_color())]


def _face(obj) -> list[str]:
    return [to_hex(list(obj.get_facecolor()))]


def _first_face(obj) -> list[str]:  # a collection's first face
    return [to_hex(list(obj.get_facecolors()[0]))]


def _original_face(obj) -> list[str]:  # a bar's colour as last set
    return [to_hex(list(obj._original_facecolor))]


def _scatter_face(obj) -> list[str]:
    faces = obj.get_facecolor()
    return [to_hex(list(faces[0]))] if len(faces) else []


def _all_faces(obj) -> list[str]:
    return [to_hex(c) for c in obj.get_facecolors().tolist()]


def _all_edges(obj) -> list[str]:
    return [to_hex(list(c)) for c in obj.get_edgecolors()]


def _cmap(obj) -> list[str]:
    return [obj.get_cmap().name]


Entry = tuple  # (group, colour at the call, element, final reader or None: keep the colour)


def _cmap_name(kwargs) -> Optional[str]:
    cmap = kwargs.get("cmap")
    return None if cmap is None else (cmap if isinstance(cmap, str) else cmap.name)


def _last_of(group: str, colours: list[str], obj, reader) -> list[Entry]:
    if not colours:
        raise ValueError(f"{group} drew no colour")  # ChartMimic's logger fails here
    return [(group, colours[-1], obj, reader)]


def _flat(patches) -> list:
    from matplotlib.cbook import silent_list

    return [p for c in patches for p in c] if type(patches) is silent_list else list(patches)


def color_entries(name: str, target, kwargs: dict, result) -> list[Entry]:
    """The (group, colour, element, reader) entries of one outermost call of `name`."""
    from matplotlib.patches import PathPatch
    from matplotlib.projections.polar import PolarAxes

    polar = type(target) is PolarAxes
    if name == "_make_line":
        line, kw = result
        return [("line", to_hex(kw["color"]), line, _color)]
    if name in ("axhline", "axvline"):
        return [(name, to_hex(result.get_color()), result, _color)]
    if name in ("axvspan", "axhspan"):
        return [(name, to_hex(result.get_facecolor()), result, _face)]
    if name == "_fill_between_x_or_y":
        return [("fill_between", to_hex(list(result.get_facecolors()[0])), result, _first_face)]
    if name == "bar":
        return [("bar", to_hex(list(p._original_facecolor)), p, _original_face) for p in result]
    if name == "scatter":
        group = "polar:scatter" if polar else "scatter"
        cmap = _cmap_name(kwargs)
        if cmap is not None:
            return [(group, cmap, result, None)]
        faces = result.get_facecolor()
        return [(group, to_hex(list(faces[0])), result, _scatter_face)] if len(faces) else []
    if name == "pie":
        return [("pie", to_hex(w.get_facecolor()), w, _face) for w in result[0]]
    if name in ("hlines", "vlines"):
        return _last_of(name, [to_hex(list(c)) for c in result.get_edgecolors()], result, _all_edges)
    if name in ("quiver", "broken_barh"):
        return _last_of(name, [to_hex(c) for c in result.get_facecolors().tolist()], result, _all_faces)
    if name == "boxplot":
        return [("boxplot", to_hex(list(b.get_facecolor())), b, _face) for b in result["boxes"] if type(b) is PathPatch]
    if name == "violinplot":
        return [("violinplot", to_hex(list(b.get_facecolor()[0])), b, _first_face) for b in result["bodies"]]
    if name in ("hist", "fill"):
        return [(name, to_hex(list(p.get_facecolor())), p, _face) for p in _flat(result[2] if name == "hist" else result)]
    if name == "polar:plot":  # PolarAxes.plot: only a plain PolarAxes records (a subclass records nothing)
        return [("polar:plot", to_hex(line.get_color()), line, _color) for line in result] if polar else []
    if name in ("imshow", "pcolor", "contour", "contourf", "tripcolor"):
        return [(name, result.get_cmap().name, result, _cmap)]
    return []


def init_entries(name: str, obj) -> list[Entry]:
    """Entries of an outermost traced constructor (an image or an ellipse/circle patch)."""
    from matplotlib.image import NonUniformImage
    from matplotlib.patches import Circle, Ellipse

    if name == "NonUniformImage" and type(obj) is NonUniformImage:
        return [("NonUniformImage", obj.get_cmap().name, obj, _cmap)]
    if type(obj) is {"Ellipse": Ellipse, "Circle": Circle}.get(name):
        return [("patch", to_hex(obj.get_facecolor()), obj, _face)]  # one group: one defining file
    return []


def entries_3d(name: str, kwargs: dict, result) -> list[Entry]:
    group = f"3d:{name}"
    if name in ("scatter", "plot_surface") and _cmap_name(kwargs) is not None:
        return [(group, _cmap_name(kwargs), result, None)]
    if name in ("scatter", "add_collection3d"):
        return _last_of(group, [to_hex(c) for c in result.get_facecolors().tolist()], result, _all_faces)
    if name in ("plot_surface", "bar3d"):
        return [(group, to_hex(result.get_facecolors().tolist()[0]), result, lambda o: [to_hex(o.get_facecolors().tolist()[0])])]
    if name == "plot":
        return [(group, to_hex(line.get_color()), line, _color) for line in result]
    if name == "bar":
        return [(group, to_hex(p.get_facecolor()), p, lambda o: [to_hex(o.get_facecolor())]) for p in result]
    return []


class ChartMimicRecorder:
    """Records types and colour keys while installed; `collect_texts` + the renderer's text
    calls give the texts; `capture(figure)` reads colours and layout off the figure."""

    def __init__(self):
        self.depth = {TYPE: 0, COLOR: 0}  # > 0 while an outermost traced call of that log runs
        self.types: list[str] = []
        self.kept: dict[tuple[str, str], tuple] = {}  # (group, colour at call) -> (element, reader); first-key order
        self.broken: Optional[str] = None  # why ChartMimic's colour logger would have failed
        self.texts: Optional[list[str]] = None  # drawn strings, while a capture draws
        self.drawing: list = []  # stack of the Text objects being drawn

    # ------------------------------------------------------------------ installing

    def _targets(self) -> list[tuple[type, str, frozenset, Callable]]:
        """(class, attribute, logs, colour-entry function) for every traced callable."""
        from matplotlib.axes import Axes
        from matplotlib.axes._base import _process_plot_var_args
        from matplotlib.image import NonUniformImage
        from matplotlib.patches import Circle, Ellipse
        from matplotlib.projections.polar import PolarAxes

        call = lambda name: lambda target, kwargs, result: color_entries(name, target, kwargs, result)  # noqa: E731
        init = lambda name: lambda target, kwargs, result: init_entries(name, target)  # noqa: E731
        both, type_only, color_only = frozenset((TYPE, COLOR)), frozenset((TYPE,)), frozenset((COLOR,))
        out = [(Axes, n, both, call(n)) for n in AXES_BOTH]
        out += [(Axes, n, type_only, call(n)) for n in AXES_TYPE_ONLY]
        out += [(Axes, n, color_only, call(n)) for n in AXES_COLOR_ONLY]
        out += [(_process_plot_var_args, "_make_line", color_only, call("_make_line"))]
        out += [(PolarAxes, "plot", color_only, call("polar:plot"))]  # after Axes.plot: it wraps that
        out += [(cls, "__init__", both, init(cls.__name__)) for cls in (NonUniformImage, Ellipse, Circle)]
        try:
            from mpl_toolkits.mplot3d import Axes3D
        except ImportError:
            return out
        return out + [(Axes3D, n, both, lambda t, k, r, n=n: entries_3d(n, k, r)) for n in AXES3D_BOTH]

    @contextmanager
    def installed(self):
        """Wrap the traced callables and the Agg renderer's text drawing for the block."""
        from matplotlib.backends.backend_agg import RendererAgg
        from matplotlib.text import Text

        saved = []  # [(class, name, original in the class dict or None)]
        for cls, name, logs, entries in self._targets():
            method = cls.__dict__.get(name) or _inherited(cls, name)
            if not callable(method):
                continue  # this matplotlib lacks it
            saved.append((cls, name, cls.__dict__.get(name)))
            setattr(cls, name, self._wrap(method, name, logs, entries))
        for cls, name, wrap in ((Text, "draw", self._wrap_text), (RendererAgg, "draw_text", self._wrap_draw_text)):
            saved.append((cls, name, cls.__dict__[name]))
            setattr(cls, name, wrap(cls.__dict__[name]))
        try:
            yield self
        finally:
            for cls, name, original in reversed(saved):
                if original is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)

    def _wrap(self, method, name: str, logs: frozenset, entries: Callable):
        from matplotlib.projections.polar import PolarAxes

        recorder = self
        source = os.path.basename(inspect.getfile(method))  # ChartMimic names a type by file and function

        @functools.wraps(method)
        def traced(target, *args, **kwargs):
            outer = [log for log in logs if recorder.depth[log] == 0]
            for log in logs:
                recorder.depth[log] += 1
            try:
                result = method(target, *args, **kwargs)
            finally:
                for log in logs:
                    recorder.depth[log] -= 1
            if TYPE in outer and len(recorder.types) < MAX_RECORDED:
                polar = "_polar" if name == "plot" and type(target) is PolarAxes else ""
                recorder.types.append(f"{source}{polar}-{name}")
            if COLOR in outer and recorder.broken is None:
                try:
                    for group, colour, element, reader in entries(target, kwargs, result):
                        if len(recorder.kept) < MAX_RECORDED or (group, colour) in recorder.kept:
                            recorder.kept[(group, colour)] = (element, reader)
                except Exception as error:  # ChartMimic's logger raises here: it has no colours
                    recorder.broken = f"{name}: {type(error).__name__}: {error}"[:200]
            return result

        return traced

    def _wrap_text(self, draw):
        recorder = self

        @functools.wraps(draw)
        def traced_draw(text, *args, **kwargs):
            recorder.drawing.append(text)
            try:
                return draw(text, *args, **kwargs)
            finally:
                recorder.drawing.pop()

        return traced_draw

    def _wrap_draw_text(self, draw_text):
        recorder = self

        @functools.wraps(draw_text)
        def traced_draw_text(renderer, gc, x, y, s, *args, **kwargs):
            if recorder.texts is not None and not (recorder.drawing and _is_cleared_tick_text(recorder.drawing[-1])):
                recorder.texts.append(str(s))
            return draw_text(renderer, gc, x, y, s, *args, **kwargs)

        return traced_draw_text

    # ------------------------------------------------------------------ reading

    def collect_texts(self) -> None:
        self.texts = []

    def capture(self, figure) -> dict:
        """{'texts', 'types', 'colors', 'layout'} (see the module docstring)."""
        texts, self.texts = self.texts or [], None
        return {"texts": texts, "types": list(self.types), "colors": self._colors(), "layout": layout(figure)}

    def _colors(self) -> list[list[str]]:
        if self.broken is not None:
            return []
        out: dict[tuple[str, str], None] = {}
        try:
            for (group, colour), (element, reader) in self.kept.items():
                for final in reader(element) if reader is not None else [colour]:
                    out.setdefault((group, final))
        except Exception:  # ChartMimic's final colour read raises here: it has no colours
            return []
        return [list(key) for key in out]


def _inherited(cls, name: str):
    """A method `cls` inherits, looked up at call time (so wrappers installed on the base
    class later still run), or None when there is none."""
    if not callable(getattr(cls, name, None)):
        return None

    def call(self, *args, **kwargs):
        return getattr(super(cls, self), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _is_cleared_tick_text(text) -> bool:
    """A major tick label or offset text of an x or y axis of the text's figure."""
    figure = text.get_figure(root=True) if hasattr(text, "get_figure") else None
    for ax in getattr(figure, "axes", ()):
        for axis in (ax.xaxis, ax.yaxis):
            if text is axis.offsetText or any(text is t.label1 or text is t.label2 for t in axis.majorTicks):
                return True
    return False


def layout(figure) -> list[list[int]]:
    """[[nrows, ncols, row_start, row_end, col_start, col_end]] (ends inclusive) per axes with
    a SubplotSpec."""
    cells = []
    for ax in figure.axes:
        spec = ax.get_subplotspec()
        if spec is None:
            continue
        nrows, ncols = spec.get_gridspec().get_geometry()
        cells.append([nrows, ncols, spec.rowspan.start, spec.rowspan.stop - 1, spec.colspan.start, spec.colspan.stop - 1])
    return cells

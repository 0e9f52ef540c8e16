"""The two Qt controls magicgui has no widget for (wrapped as magicgui widgets in
:mod:`._forms`).

* :class:`LogSlider`: a log-scale slider with a numeric box, coloured marks (the suggested
  β) and a commit signal (released, typed, keyboard) beside the live one;
* :class:`PlotWidget`: a dependency-free line plot painted with QPainter (L-curve, risk).

They compute nothing.
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, Qt, Signal
from qtpy.QtGui import QColor, QDoubleValidator, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLineEdit,
    QSizePolicy,
    QSlider,
    QStyle,
    QStyleOptionSlider,
    QWidget,
)

# --------------------------------------------------------------------------------------------
# controls


class _MarkedSlider(QSlider):
    """A horizontal QSlider that paints coloured ticks at marked positions."""

    def __init__(self, parent=None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.markers: dict[str, tuple[int, QColor]] = {}
        self.setMinimumHeight(26)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().paintEvent(event)
        if not self.markers:
            return
        opt = QStyleOptionSlider()
        self.initStyleOption(opt)
        groove = self.style().subControlRect(
            QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderGroove, self
        )
        handle = self.style().subControlRect(
            QStyle.ComplexControl.CC_Slider, opt, QStyle.SubControl.SC_SliderHandle, self
        )
        span = max(groove.width() - handle.width(), 1)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for pos, color in self.markers.values():
            frac = (pos - self.minimum()) / max(self.maximum() - self.minimum(), 1)
            x = groove.left() + handle.width() / 2 + frac * span
            y = self.height() - 1
            painter.setPen(QPen(color, 1))
            painter.setBrush(color)
            painter.drawPolygon(
                QPolygonF([QPointF(x, y - 7), QPointF(x - 5, y), QPointF(x + 5, y)])
            )
        painter.end()


class LogSlider(QWidget):
    """A logarithmic slider with a numeric box, for β and friends.

    Signals
    -------
    valueChanged(float)
        On every slider move (also while dragging) and on a typed value.
    valueCommitted(float)
        When the user lets go of the slider, types a value, or moves it with the keyboard.
    """

    valueChanged = Signal(float)
    valueCommitted = Signal(float)

    def __init__(
        self,
        minimum: float = 1e-3,
        maximum: float = 1e2,
        value: float = 0.1,
        *,
        steps: int = 400,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._lo = math.log10(minimum)
        self._hi = math.log10(maximum)
        self._value = float(value)
        self.slider = _MarkedSlider(self)
        self.slider.setRange(0, steps)
        self.slider.setPageStep(max(steps // 20, 1))
        self.box = QLineEdit(self)
        self.box.setValidator(QDoubleValidator(0.0, 1e300, 12, self.box))
        self.box.setFixedWidth(80)
        self.box.setAlignment(Qt.AlignmentFlag.AlignRight)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.box)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(lambda: self.valueCommitted.emit(self._value))
        self.box.editingFinished.connect(self._on_box)
        self.setValue(value, emit=False)

    # mapping
    def _to_pos(self, value: float) -> int:
        x = (math.log10(max(value, 1e-300)) - self._lo) / (self._hi - self._lo)
        return int(round(min(max(x, 0.0), 1.0) * self.slider.maximum()))

    def _from_pos(self, pos: int) -> float:
        return 10.0 ** (self._lo + (self._hi - self._lo) * pos / self.slider.maximum())

    def value(self) -> float:
        return self._value

    def minimum(self) -> float:
        return 10.0**self._lo

    def maximum(self) -> float:
        return 10.0**self._hi

    def setRange(self, minimum: float, maximum: float) -> None:  # noqa: N802 - Qt style
        if not (0 < minimum < maximum):
            raise ValueError(
                f"LogSlider range must satisfy 0 < minimum < maximum, got {minimum!r}, {maximum!r}"
            )
        self._lo, self._hi = math.log10(minimum), math.log10(maximum)
        self.setValue(min(max(self._value, minimum), maximum), emit=False)

    def setValue(self, value: float, *, emit: bool = True) -> None:  # noqa: N802
        value = float(value)
        self._value = min(max(value, self.minimum()), self.maximum())
        self.slider.blockSignals(True)
        self.slider.setValue(self._to_pos(self._value))
        self.slider.blockSignals(False)
        self.box.setText(f"{self._value:.4g}")
        if emit:
            self.valueChanged.emit(self._value)
            self.valueCommitted.emit(self._value)

    def setMarker(self, key: str, value: float | None, color: str = "#ff9f1c") -> None:  # noqa: N802
        """Mark ``value`` under the slider (None removes the mark)."""
        if value is None or not np.isfinite(value) or value <= 0:
            self.slider.markers.pop(key, None)
        else:
            self.slider.markers[key] = (self._to_pos(value), QColor(color))
        self.slider.update()

    def _on_slider(self, pos: int) -> None:
        self._value = self._from_pos(pos)
        self.box.setText(f"{self._value:.4g}")
        self.valueChanged.emit(self._value)
        if not self.slider.isSliderDown():  # keyboard, wheel, click on the groove
            self.valueCommitted.emit(self._value)

    def _on_box(self) -> None:
        try:
            value = float(self.box.text())
        except ValueError:
            self.box.setText(f"{self._value:.4g}")
            return
        if value <= 0:
            self.box.setText(f"{self._value:.4g}")
            return
        if abs(value - self._value) <= 1e-12 * max(abs(value), 1.0):
            return
        if value < self.minimum() or value > self.maximum():
            self.setRange(min(value / 10, self.minimum()), max(value * 10, self.maximum()))
        self.setValue(value)


class PlotWidget(QWidget):
    """A small line plot painted with QPainter (no matplotlib).

    Each series is drawn against a shared x axis (optionally logarithmic) and scaled to its
    own y range (listed in the legend), which is what a two-term L-curve or a perimeter
    profile needs.  Vertical markers show the current value and a suggestion.
    """

    COLORS = ("#4fc3f7", "#ff8a65", "#aed581", "#ba68c8")

    def __init__(self, title: str = "", *, log_x: bool = False, parent=None) -> None:
        super().__init__(parent)
        self.title = title
        self.log_x = log_x
        self.series: list[tuple[str, np.ndarray, np.ndarray, QColor, bool]] = []
        self.markers: dict[str, tuple[float, QColor]] = {}
        self.x_label = ""
        self.setMinimumHeight(130)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def clear(self) -> None:
        self.series = []
        self.update()

    def add_series(self, name: str, x, y, color: str | None = None, *, log_y: bool = False):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        color = QColor(color or self.COLORS[len(self.series) % len(self.COLORS)])
        self.series.append((name, x, y, color, log_y))
        self.update()

    def set_marker(self, key: str, x: float | None, color: str = "#ffffff") -> None:
        if x is None or not np.isfinite(x):
            self.markers.pop(key, None)
        else:
            self.markers[key] = (float(x), QColor(color))
        self.update()

    def _fx(self, x: np.ndarray) -> np.ndarray:
        if self.log_x:
            return np.log10(np.maximum(x, 1e-300))
        return x

    def x_range(self) -> tuple[float, float] | None:
        xs = [self._fx(x[np.isfinite(x)]) for _, x, _, _, _ in self.series if x.size]
        xs = [x for x in xs if x.size]
        if not xs:
            return None
        lo = min(float(x.min()) for x in xs)
        hi = max(float(x.max()) for x in xs)
        return (lo, hi if hi > lo else lo + 1.0)

    def _legend_lines(self, fm, width: int) -> list[list[tuple[str, QColor]]]:
        """The legend entries (name and y range of each series), wrapped to ``width``."""
        lines: list[list[tuple[str, QColor]]] = [[]]
        used = 0
        for name, x, y, color, log_y in self.series:
            ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
            if not ok.any():
                continue
            text = f"{name} [{float(y[ok].min()):.3g}, {float(y[ok].max()):.3g}]"
            advance = fm.horizontalAdvance(text) + 12
            if lines[-1] and used + advance > width:
                lines.append([])
                used = 0
            lines[-1].append((text, color))
            used += advance
        return [line for line in lines if line]

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().color(self.foregroundRole())
        w, h = self.width(), self.height()
        left, right, top = 8, 8, 18
        legend = self._legend_lines(p.fontMetrics(), w - left - right)
        line_h = p.fontMetrics().height()
        bottom = 16 + line_h * max(len(legend), 1)
        pw, ph = max(w - left - right, 10), max(h - top - bottom, 10)
        p.setPen(QPen(fg, 1))
        p.drawText(left, 13, self.title)
        p.drawRect(left, top, pw, ph)
        xr = self.x_range()
        if xr is None:
            p.drawText(left + 6, top + ph // 2, "no data yet")
            p.end()
            return
        x0, x1 = xr

        def px(x):
            return left + (np.asarray(x) - x0) / (x1 - x0) * pw

        for _name, x, y, color, log_y in self.series:
            ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
            if not ok.any():
                continue
            yy = np.log10(y[ok]) if log_y else y[ok]
            lo, hi = float(yy.min()), float(yy.max())
            span = hi - lo if hi > lo else 1.0
            xs = px(self._fx(x[ok]))
            ys = top + ph - (yy - lo) / span * ph
            p.setPen(QPen(color, 1.6))
            if xs.size == 1:
                p.drawEllipse(QPointF(float(xs[0]), float(ys[0])), 2.5, 2.5)
            else:
                points = [QPointF(float(a), float(b)) for a, b in zip(xs, ys, strict=True)]
                p.drawPolyline(QPolygonF(points))
        for row, line in enumerate(legend):  # one or more lines, as many as the width needs
            legend_x = left
            for text, color in line:
                p.setPen(QPen(color, 1))
                p.drawText(int(legend_x), top + ph + 14 + line_h * (row + 1) - 2, text)
                legend_x += p.fontMetrics().horizontalAdvance(text) + 12
        for x, color in self.markers.values():
            xv = float(px(self._fx(np.array([x])))[0])
            if left <= xv <= left + pw:
                p.setPen(QPen(color, 1.2, Qt.PenStyle.DashLine))
                p.drawLine(QPointF(xv, top), QPointF(xv, top + ph))
        p.setPen(QPen(fg, 1))
        lo_txt = f"{10**x0:.3g}" if self.log_x else f"{x0:.3g}"
        hi_txt = f"{10**x1:.3g}" if self.log_x else f"{x1:.3g}"
        p.drawText(left, top + ph + 12, lo_txt)
        fm = p.fontMetrics()
        p.drawText(left + pw - fm.horizontalAdvance(hi_txt), top + ph + 12, hi_txt)
        if self.x_label:
            p.drawText(
                int(left + pw / 2 - fm.horizontalAdvance(self.x_label) / 2),
                top + ph + 12,
                self.x_label,
            )
        p.end()

"""Drawing spend over time against the budget lines (``cardano-agent spend --plot FILE``).

:func:`budget_curve` is pure: it turns a budget's committed charges into the step curve its
limit is checked against (the rolling-window sum for a windowed budget, the running total for
one without a window). :func:`draw_spend` renders curves with matplotlib's Agg canvas, which it
imports only when called, so the CLI stays light and works without a display. matplotlib is
an optional dependency (``pip install cardano-pay-agent[plot]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from agent.errors import AgentError

LOVELACE_PER_ADA = 1_000_000
INSTALL_HINT = "pip install 'cardano-pay-agent[plot]'"


class PlotError(AgentError):
    """The spend plot cannot be drawn: matplotlib is missing or the file cannot be written."""


@dataclass(frozen=True)
class SpendLine:
    """One line of the plot: ``points`` are ``(epoch seconds, lovelace)`` steps, oldest first."""

    label: str
    points: tuple[tuple[float, int], ...]
    limit_lovelace: int | None = None


def budget_curve(charges: Iterable[tuple[float, int]], *, window_s: int | None,
                 since: float, until: float) -> tuple[tuple[float, int], ...]:
    """Return the spend a budget counts at each change between ``since`` and ``until``.

    A charge made at ``t`` counts from ``t`` while it is inside the window, i.e. up to and
    including ``t + window_s`` (the budget's own rule: ``charged_at >= now - window_s``); with
    no window it counts forever, so the curve is the running total. The first point is at
    ``since`` (charges before it that still count are included) and the last at ``until``.

    Args:
        charges: ``(charged_at, amount)`` committed charges, in any order.
        window_s: the budget's rolling window in seconds, or None for all time.
        since: start of the plotted range (epoch seconds).
        until: end of the plotted range (epoch seconds); ``until >= since``.
    """
    if until < since:
        raise ValueError("the plotted range ends before it starts")
    events: dict[float, int] = {}
    level = 0
    for at, amount in charges:
        amount = int(amount)
        if at > until:
            continue
        expires = None if window_s is None else at + window_s
        if at <= since:
            if expires is None or expires >= since:
                level += amount
        else:
            events[at] = events.get(at, 0) + amount
        if expires is not None and expires >= since and expires < until:
            # Counted up to and including ``expires``; gone just after it.
            drop_at = _after(expires)
            events[drop_at] = events.get(drop_at, 0) - amount
    points = [(since, level)]
    for at in sorted(events):
        level += events[at]
        if at == points[-1][0]:
            points[-1] = (at, level)
        else:
            points.append((at, level))
    if points[-1][0] < until:
        points.append((until, level))
    return tuple(points)


def _after(t: float) -> float:
    """The next representable instant after ``t`` (where an expired charge stops counting)."""
    import math

    return math.nextafter(t, math.inf)


def zoom_start(times: Iterable[float], *, since: float | None, until: float, margin: float = 0.05) -> float:
    """Where the time axis starts: just before the first payment, never before ``since``.

    Seven days of range with payments only in the last hour would draw one spike at the right
    edge; starting near the data shows them. With no data, the range is the last day.
    """
    first = min(times, default=None)
    if first is None:
        return since if since is not None else until - 86_400
    span = max(until - first, 3600.0)
    start = first - span * margin
    return max(start, since) if since is not None else start


def draw_spend(path: Path, lines: Sequence[SpendLine], *, since: float, until: float,
               title: str = "Spend against budgets",
               bars: Sequence[tuple[str, int]] = (), bars_title: str = "") -> Path:
    """Draw ``lines`` (ADA over UTC time) with each limit as a dashed line; write a PNG to ``path``.

    With ``bars`` (``(label, lovelace)``, e.g. the spend per day or per route of ``spend --by``),
    a second panel below draws them as bars.

    Raises:
        PlotError: matplotlib is not installed, or the file cannot be written.
    """
    try:
        from matplotlib import dates as mdates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(f"--plot needs matplotlib: {INSTALL_HINT}") from None

    fig = Figure(figsize=(9, 8.0 if bars else 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1) if bars else fig.add_subplot()
    for n, line in enumerate(lines):
        color = f"C{n % 10}"
        xs = mdates.date2num([_utc(t) for t, _ in line.points])
        ys = [v / LOVELACE_PER_ADA for _, v in line.points]
        ax.step(xs, ys, where="post", color=color, linewidth=1.8, label=line.label)
        if line.limit_lovelace is not None:
            ax.axhline(line.limit_lovelace / LOVELACE_PER_ADA, color=color, linestyle="--",
                       linewidth=1.0, label=f"{line.label} limit")
    if not lines:
        ax.text(0.5, 0.5, "no budgets and no payments", transform=ax.transAxes,
                ha="center", va="center", color="gray")
    ax.set_xlim(float(mdates.date2num(_utc(since))), float(mdates.date2num(_utc(until))))
    ax.set_ylim(bottom=0)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("ADA counted against the budget")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend(loc="upper left", fontsize="small")
    if bars:
        bx = fig.add_subplot(2, 1, 2)
        labels = [label for label, _ in bars]
        values = [v / LOVELACE_PER_ADA for _, v in bars]
        bx.bar(range(len(bars)), values, color="C0")
        bx.set_xticks(range(len(bars)))
        bx.set_xticklabels(labels, rotation=30 if len(bars) > 4 else 0, ha="right" if len(bars) > 4 else "center",
                           fontsize="small")
        bx.set_ylabel("ADA paid (fees included)")
        bx.set_title(bars_title)
        bx.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(str(path), format="png")
    except OSError as exc:
        raise PlotError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Path(path)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)

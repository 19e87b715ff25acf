"""The 30-day confirmation-rate chart as plain geometry for an inline SVG: no script, no library.

Pure: days and counts in, bars and labels out; the template only draws them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from agents import readside as rs
from schemas import effects as fx

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 36   # room for the % axis and the dates


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    percent: int | None
    title: str          # the tooltip: the day and its numbers, in words


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    grid: list[tuple[float, str]]       # (y, "50%")
    dates: list[tuple[float, str]]      # (x, "12/01")
    left: int
    right: float
    baseline: float
    empty: bool


def days_back(today: date, n: int) -> list[date]:
    return [today - timedelta(days=n - 1 - i) for i in range(n)]


def rate_chart(days: list[date], counts: dict[str, dict[str, int]]) -> Chart:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(days))
    bars, dates = [], []
    for i, day in enumerate(days):
        c = counts.get(day.isoformat(), {})
        sent, answered = c.get(fx.CHECK_SENT, 0), c.get(rs.ANSWERED, 0)
        share = rs.rate(sent, answered)
        x = LEFT + i * slot + slot * 0.15
        label = f"{day.month}/{day.day}"
        if share is None:
            title = f"{label} 確認の送信なし"
            bars.append(Bar(x, TOP + plot_h, slot * 0.7, 0, None, title))
        else:
            h = plot_h * share
            title = f"{label} 確認 {sent}件のうち {answered}件が連絡前に応答（{round(share * 100)}%）"
            bars.append(Bar(x, TOP + plot_h - h, slot * 0.7, h, round(share * 100), title))
        if i % 5 == 0 or i == len(days) - 1:
            dates.append((LEFT + i * slot + slot / 2, label))
    grid = [(TOP + plot_h * (1 - p / 100), f"{p}%") for p in (0, 25, 50, 75, 100)]
    return Chart(WIDTH, HEIGHT, bars, grid, dates, LEFT, WIDTH - RIGHT, TOP + plot_h,
                 all(b.percent is None for b in bars))

"""The territory-health report: plain values in, one self-contained HTML page out.

Every chart is inline SVG drawn here, so the file needs no network, no script and no fonts to be
viewed, mailed or archived. Sections: balance scorecard, each territory against its band, the trend
of the org's balance, open drift events, and a map-like scatter of accounts by territory. Marks that
a reader (or a test) can count carry ``class="mark"`` inside an ``<svg data-chart="...">``.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from monitor.catalog import RATIOS

TREND_COLORS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
BAR_LABEL_LIMIT: Final = 60
"""Up to this many territories a band chart has one labelled bar each; above, sorted unlabelled columns."""
MAX_POINTS: Final = 5000
GRID: Final = 'stroke="#dde2e6"'


@dataclass(frozen=True)
class Territory:
    """One territory of the snapshot with its metric values (None where undefined)."""

    owner_id: str
    name: str
    region: str
    values: Mapping[str, float | None]


@dataclass(frozen=True)
class Balance:
    """How evenly one metric is spread across territories."""

    metric: str
    mean: float | None
    cv: float | None
    gini: float | None
    min_max_ratio: float | None
    outside_band: int


@dataclass(frozen=True)
class Band:
    """A drift rule's limits on a metric for this snapshot (None: no limit on that side)."""

    rule: str
    metric: str
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class TrendPoint:
    """The org's balance of one metric in one earlier (or this) snapshot."""

    as_of: dt.date
    metric: str
    cv: float | None
    gini: float | None


@dataclass(frozen=True)
class DriftRow:
    """An open drift event."""

    owner_id: str
    owner: str
    rule: str
    metric: str
    value: float | None
    mean: float | None
    deviation: float | None
    consecutive: int
    first_seen: dt.date


@dataclass(frozen=True)
class AccountPoint:
    """A located account and the territory that owned it as of the snapshot (None: no territory)."""

    lat: float
    lon: float
    owner_id: str | None


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows; built by ``monitor.report_data.load_report`` from the store."""

    as_of: dt.date
    snapshot_kind: str
    generated_at: dt.datetime
    territories: Sequence[Territory]
    balance: Sequence[Balance]
    bands: Sequence[Band]
    trend: Sequence[TrendPoint] = ()
    drift: Sequence[DriftRow] = ()
    accounts: Sequence[AccountPoint] = ()
    accounts_total: int = 0
    notes: Sequence[str] = field(default_factory=tuple)


def esc(value: object) -> str:
    """Text for HTML and SVG, escaped."""
    return html.escape(str(value), quote=True)


def fmt(value: float | None, metric: str = "") -> str:
    """A number for people: percentages for ratios, k/M/B suffixes for large amounts, '-' if undefined."""
    if value is None or not math.isfinite(value):
        return "-"
    if metric in RATIOS:
        return f"{value:.0%}"
    magnitude = abs(value)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}" if magnitude < 100 else f"{value:.0f}"


def territory_color(index: int) -> str:
    """A distinct colour per territory: hues a golden angle apart, two lightness levels."""
    hue = (index * 137.508) % 360
    lightness = 42 if index % 2 else 55
    return f"hsl({hue:.1f},70%,{lightness}%)"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _nice_max(value: float) -> float:
    """A round number at or above ``value`` for an axis end."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def svg_open(chart: str, width: float, height: float, label: str, extra: str = "") -> str:
    """The opening tag of a chart: its name for readers and tests, its size, and an accessible label."""
    return (
        f'<svg data-chart="{esc(chart)}" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'height="{height:.0f}" role="img" aria-label="{esc(label)}" {extra}>'
    )


def scorecard(balance: Sequence[Balance]) -> str:
    """The balance of every metric as a table; metrics with territories outside their band stand out."""
    rows = []
    for b in balance:
        flagged = b.outside_band > 0
        rows.append(
            f'<tr class="{"bad" if flagged else ""}"><th scope="row">{esc(b.metric)}</th>'
            f"<td>{fmt(b.mean, b.metric)}</td><td>{fmt(b.cv, 'utilization')}</td>"
            f"<td>{fmt(b.gini)}</td><td>{fmt(b.min_max_ratio)}</td><td>{b.outside_band}</td></tr>"
        )
    return (
        '<table class="scorecard"><thead><tr><th>metric</th><th>mean</th><th>coefficient of variation</th>'
        "<th>Gini</th><th>min / max</th><th>territories outside band</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def band_chart(band: Band, territories: Sequence[Territory]) -> str:
    """Each territory's value of the band's metric against the band, sorted; breaches in red."""
    points = sorted(
        ((t.values.get(band.metric), t) for t in territories if _finite(t.values.get(band.metric))),
        key=lambda p: (p[0] or 0.0, p[1].owner_id),
    )
    if not points:
        return f'<p class="empty">No territory has a value of {esc(band.metric)}.</p>'
    values = [float(v or 0.0) for v, _ in points]
    top = _nice_max(max([*values, band.upper or 0.0, band.lower or 0.0]) * 1.05)
    labelled = len(points) <= BAR_LABEL_LIMIT
    width, left, right = 760.0, (170.0 if labelled else 50.0), 20.0
    plot = width - left - right
    if labelled:
        row = 16.0
        height = row * len(points) + 40.0
    else:
        height = 260.0
    parts = [
        svg_open(f"band-{band.rule}", width, height, f"{band.metric} of each territory against {band.rule}")
    ]

    def outside(value: float) -> bool:
        return (band.lower is not None and value < band.lower) or (
            band.upper is not None and value > band.upper
        )

    if labelled:

        def x(value: float) -> float:
            return left + plot * value / top

        low = x(band.lower) if band.lower is not None else left
        high = x(band.upper) if band.upper is not None else left + plot
        parts.append(
            f'<rect class="band" x="{low:.1f}" y="10" width="{max(high - low, 0):.1f}" '
            f'height="{row * len(points):.1f}" fill="#2ca02c" fill-opacity="0.15"/>'
        )
        for i, (value, t) in enumerate(zip(values, (p[1] for p in points), strict=True)):
            top_y = 10 + i * row
            color = "#d62728" if outside(value) else "#4c78a8"
            parts.append(
                f'<text x="{left - 6:.0f}" y="{top_y + row * 0.7:.1f}" text-anchor="end">{esc(t.name)}</text>'
                f'<rect class="mark" x="{left:.1f}" y="{top_y + 2:.1f}" '
                f'width="{max(x(value) - left, 0.5):.1f}" '
                f'height="{row - 4:.1f}" fill="{color}">'
                f"<title>{esc(t.name)}: {fmt(value, band.metric)}</title></rect>"
            )
        axis_y = 10 + row * len(points)
        parts.append(
            f'<line x1="{left}" y1="{axis_y:.1f}" x2="{left + plot}" y2="{axis_y:.1f}" stroke="#555"/>'
            f'<text x="{left}" y="{axis_y + 16:.1f}">0</text>'
            f'<text x="{left + plot}" y="{axis_y + 16:.1f}" text-anchor="end">{fmt(top, band.metric)}</text>'
        )
    else:
        bottom, top_px = height - 25.0, 10.0

        def y(value: float) -> float:
            return bottom - (bottom - top_px) * value / top

        low = y(band.lower) if band.lower is not None else bottom
        high = y(band.upper) if band.upper is not None else top_px
        parts.append(
            f'<rect class="band" x="{left}" y="{high:.1f}" width="{plot}" height="{max(low - high, 0):.1f}" '
            f'fill="#2ca02c" fill-opacity="0.15"/>'
        )
        step = plot / len(values)
        for i, (value, t) in enumerate(zip(values, (p[1] for p in points), strict=True)):
            color = "#d62728" if outside(value) else "#4c78a8"
            parts.append(
                f'<rect class="mark" x="{left + i * step:.2f}" y="{y(value):.1f}" '
                f'width="{max(step * 0.8, 0.6):.2f}" '
                f'height="{max(bottom - y(value), 0.5):.1f}" fill="{color}"><title>{esc(t.name)}: '
                f"{fmt(value, band.metric)}</title></rect>"
            )
        parts.append(
            f'<line x1="{left}" y1="{bottom}" x2="{left + plot}" y2="{bottom}" stroke="#555"/>'
            f'<text x="{left - 4}" y="{bottom}" text-anchor="end">0</text>'
            f'<text x="{left - 4}" y="{top_px + 8}" text-anchor="end">{fmt(top, band.metric)}</text>'
            f'<text x="{left + plot / 2:.0f}" y="{height - 6}" text-anchor="middle">'
            f"{len(values)} territories, sorted</text>"
        )
    parts.append("</svg>")
    limits = " to ".join(fmt(v, band.metric) if v is not None else "-" for v in (band.lower, band.upper))
    breaches = sum(outside(v) for v in values)
    return (
        f"<figure><figcaption><b>{esc(band.metric)}</b> against rule <code>{esc(band.rule)}</code>: band "
        f"{limits}; {breaches} of {len(values)} territories outside.</figcaption>{''.join(parts)}</figure>"
    )


def trend_chart(trend: Sequence[TrendPoint]) -> str:
    """The coefficient of variation of each metric over the snapshots: one line per metric."""
    usable = [p for p in trend if _finite(p.cv)]
    dates = sorted({p.as_of for p in usable})
    if not dates:
        return '<p class="empty">No snapshots to draw a trend from.</p>'
    metrics = list(dict.fromkeys(p.metric for p in usable))
    width, height, left, right, top_px, bottom = 760.0, 280.0, 55.0, 130.0, 12.0, 250.0
    plot = width - left - right
    top = _nice_max(max(float(p.cv or 0.0) for p in usable) * 1.1)
    first, last = dates[0].toordinal(), dates[-1].toordinal()
    span = max(last - first, 1)

    def x(day: dt.date) -> float:
        return left + plot * ((day.toordinal() - first) / span if last > first else 0.5)

    def y(value: float) -> float:
        return bottom - (bottom - top_px) * value / top

    parts = [
        svg_open("trend", width, height, "coefficient of variation over time"),
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot}" y2="{bottom}" stroke="#555"/>',
        f'<line x1="{left}" y1="{top_px}" x2="{left}" y2="{bottom}" stroke="#555"/>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end">0%</text>',
        f'<text x="{left - 4}" y="{top_px + 8}" text-anchor="end">{top:.0%}</text>',
        *(
            f'<line x1="{left}" y1="{y(top * q / 4):.1f}" x2="{left + plot}" y2="{y(top * q / 4):.1f}" '
            f'stroke="#e5e5e5"/><text x="{left - 4}" y="{y(top * q / 4) + 4:.1f}" text-anchor="end">'
            f"{100 * top * q / 4:g}%</text>"
            for q in (1, 2, 3)
        ),
        f'<text x="{left}" y="{bottom + 18}">{dates[0].isoformat()}</text>',
        f'<text x="{left + plot}" y="{bottom + 18}" text-anchor="end">{dates[-1].isoformat()}</text>',
    ]
    for k, metric in enumerate(metrics):
        color = TREND_COLORS[k % len(TREND_COLORS)]
        series = sorted((p.as_of, float(p.cv or 0.0)) for p in usable if p.metric == metric)
        path = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in series)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for d, v in series:
            parts.append(
                f'<circle class="mark" cx="{x(d):.1f}" cy="{y(v):.1f}" r="3" fill="{color}">'
                f"<title>{esc(metric)} {d.isoformat()}: {v:.1%}</title></circle>"
            )
        ly = top_px + 14 + 18 * k
        parts.append(
            f'<rect x="{left + plot + 12}" y="{ly - 9}" width="12" height="12" fill="{color}"/>'
            f'<text x="{left + plot + 30}" y="{ly + 1}">{esc(metric)}</text>'
        )
    parts.append("</svg>")
    return (
        "<figure><figcaption>Coefficient of variation across territories at each snapshot (lower is "
        f"fairer).</figcaption>{''.join(parts)}</figure>"
    )


def drift_table(rows: Sequence[DriftRow], as_of: dt.date) -> str:
    """The open drift events, longest-running first."""
    if not rows:
        return '<p class="empty">No open drift events.</p>'
    body = "".join(
        f"<tr><td>{esc(r.owner)} <small>{esc(r.owner_id)}</small></td><td><code>{esc(r.rule)}</code></td>"
        f"<td>{esc(r.metric)}</td><td>{fmt(r.value, r.metric)}</td><td>{fmt(r.mean, r.metric)}</td>"
        f"<td>{'-' if not _finite(r.deviation) else f'{r.deviation:+.0%}'}</td><td>{r.consecutive}</td>"
        f"<td>{r.first_seen.isoformat()}</td><td>{(as_of - r.first_seen).days}</td></tr>"
        for r in sorted(rows, key=lambda r: (r.first_seen, r.owner_id, r.rule))
    )
    return (
        '<table class="drift"><thead><tr><th>territory</th><th>rule</th><th>metric</th><th>value</th>'
        "<th>org mean</th><th>deviation</th><th>snapshots in breach</th><th>first seen</th>"
        f"<th>days open</th></tr></thead><tbody>{body}</tbody></table>"
    )


def account_map(points: Sequence[AccountPoint], territories: Sequence[Territory], total: int) -> str:
    """Accounts at their coordinates (equirectangular), coloured by territory: a map without tiles."""
    if not points:
        return '<p class="empty">No account has a location.</p>'
    if len(points) > MAX_POINTS:
        stride = len(points) / MAX_POINTS
        points = [points[int(i * stride)] for i in range(MAX_POINTS)]
    index = {t.owner_id: i for i, t in enumerate(territories)}
    lats = [p.lat for p in points]
    lons = [p.lon for p in points]
    south, north = min(lats), max(lats)
    west, east = min(lons), max(lons)
    pad_lat = max((north - south) * 0.05, 0.5)
    pad_lon = max((east - west) * 0.05, 0.5)
    south, north, west, east = south - pad_lat, north + pad_lat, west - pad_lon, east + pad_lon
    # keep the map's aspect: a degree of longitude is cos(latitude) of a degree of latitude
    squeeze = max(math.cos(math.radians((north + south) / 2)), 0.2)
    width = 760.0
    height = max(min(width * (north - south) / ((east - west) * squeeze), 700.0), 200.0)

    def x(lon: float) -> float:
        return width * (lon - west) / (east - west)

    def y(lat: float) -> float:
        return height * (north - lat) / (north - south)

    parts = [svg_open("map", width, height, "accounts by territory", 'style="background:#f4f6f8"')]
    for lon in range(-180, 181, 30):  # a graticule every 30 degrees, so that it reads as a map
        if west < lon < east:
            parts.append(
                f'<line x1="{x(lon):.1f}" y1="0" x2="{x(lon):.1f}" y2="{height:.0f}" stroke="#dde2e6"/>'
            )
    for lat in range(-90, 91, 30):
        if south < lat < north:
            parts.append(
                f'<line x1="0" y1="{y(lat):.1f}" x2="{width:.0f}" y2="{y(lat):.1f}" stroke="#dde2e6"/>'
            )
    for p in points:
        i = index.get(p.owner_id) if p.owner_id is not None else None
        color = territory_color(i) if i is not None else "#999"
        parts.append(
            f'<circle class="mark" cx="{x(p.lon):.1f}" cy="{y(p.lat):.1f}" r="3" fill="{color}" '
            'fill-opacity="0.75"/>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{territory_color(i)}"></span>{esc(t.name)}</li>'
        for i, t in enumerate(territories[:40])
    )
    more = f"<li>and {len(territories) - 40} more</li>" if len(territories) > 40 else ""
    shown = (
        f"{len(points):,} of {total:,} located accounts"
        if total > len(points)
        else f"{len(points):,} accounts"
    )
    return (
        f"<figure><figcaption>{shown}, coloured by territory (latitude {south:.1f} to {north:.1f}, "
        f"longitude {west:.1f} to {east:.1f}).</figcaption>{''.join(parts)}"
        f'<ul class="legend">{legend}{more}</ul></figure>'
    )


STYLE: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222}
body{margin:24px auto;max-width:820px;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd}
.meta{color:#666}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f4f6f8}tr.bad td,tr.bad th{color:#b00020;font-weight:600}
svg{display:block;max-width:100%;height:auto;font-size:11px}figure{margin:12px 0 24px}
figcaption{margin-bottom:6px}.empty{color:#666;font-style:italic}
ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px}
"""


def render_report(data: ReportData) -> str:
    """The whole report as one HTML document (UTF-8, no external resources)."""
    bands = "".join(band_chart(b, data.territories) for b in data.bands) or (
        '<p class="empty">No drift rule has a band for this snapshot.</p>'
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in data.notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Territory health as of {data.as_of.isoformat()}</title><style>{STYLE}</style></head><body>"
        f"<h1>Territory health as of {data.as_of.isoformat()}</h1>"
        f'<p class="meta">{len(data.territories):,} territories, {esc(data.snapshot_kind)} snapshot; '
        f"{len(data.drift)} open drift events; "
        f"generated {data.generated_at.strftime('%Y-%m-%d %H:%M UTC')}.</p>"
        + (f'<ul class="meta">{notes}</ul>' if notes else "")
        + '<section id="scorecard"><h2>Balance scorecard</h2>'
        + scorecard(data.balance)
        + "</section>"
        + f'<section id="bands"><h2>Each territory against its band</h2>{bands}</section>'
        + f'<section id="trend"><h2>Trend of the org\'s balance</h2>{trend_chart(data.trend)}</section>'
        + f'<section id="drift"><h2>Open drift events</h2>{drift_table(data.drift, data.as_of)}</section>'
        + '<section id="map"><h2>Accounts by territory</h2>'
        + account_map(data.accounts, data.territories, data.accounts_total or len(data.accounts))
        + "</section>"
        + "</body></html>\n"
    )

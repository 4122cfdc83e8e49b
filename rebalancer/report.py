"""The proposal report: one self-contained HTML page of a stored proposal (plain values in, text out).

Sections: the summary (status, moves, band violation before and after, the solver's proven gap), a
map of the accounts by territory with each move drawn from the old owner's home through the account to
the new owner's home, every affected territory before and after, the trade-off curve, the scenarios
side by side, and the move list with each move's rationale. Charts are inline SVG drawn with the health
report's own primitives; marks a reader (or a test) can count carry ``class="mark"``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.report import STYLE, esc, svg_open, territory_color


@dataclass(frozen=True)
class Place:
    """Something on the map: an account (with its owner after the proposal) or a rep's home."""

    key: str
    lat: float
    lon: float
    owner_id: str


@dataclass(frozen=True)
class ProposalPage:
    """What the page shows, read from the store by ``rebalancer.edge.report_data``."""

    proposal: Mapping[str, Any]  # ``proposals show`` JSON plus solver, tradeoff, territories, before/after
    accounts: Sequence[Place]  # located accounts, owner after the proposal
    homes: Mapping[str, tuple[float, float]]  # owner id -> home
    names: Mapping[str, str]  # owner id -> name
    scenarios: Sequence[Mapping[str, Any]]  # the latest proposal of each scenario
    generated_at: dt.datetime


def _number(value: Any, digits: int = 3) -> str:
    return "-" if not isinstance(value, int | float) or not math.isfinite(value) else f"{value:,.{digits}f}"


def _frame(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    pad_lat = max((max(lats) - min(lats)) * 0.05, 0.5)
    pad_lon = max((max(lons) - min(lons)) * 0.05, 0.5)
    return min(lats) - pad_lat, max(lats) + pad_lat, min(lons) - pad_lon, max(lons) + pad_lon


def move_map(page: ProposalPage) -> str:
    """Accounts coloured by their owner after the proposal; each move a line old home -> account -> new."""
    if not page.accounts:
        return '<p class="empty">No account has a location.</p>'
    owners = sorted(page.names)
    index = {o: i for i, o in enumerate(owners)}
    located = {a.key: a for a in page.accounts}
    south, north, west, east = _frame([(a.lat, a.lon) for a in page.accounts] + list(page.homes.values()))
    squeeze = max(math.cos(math.radians((north + south) / 2)), 0.2)
    width = 760.0
    height = max(min(width * (north - south) / ((east - west) * squeeze), 700.0), 200.0)

    def xy(lat: float, lon: float) -> str:
        return f"{width * (lon - west) / (east - west):.1f},{height * (north - lat) / (north - south):.1f}"

    parts = [svg_open("proposal-map", width, height, "accounts and moves", 'style="background:#f4f6f8"')]
    for a in page.accounts:
        x, y = xy(a.lat, a.lon).split(",")
        color = territory_color(index.get(a.owner_id, 0))
        parts.append(f'<circle class="mark" cx="{x}" cy="{y}" r="2.5" fill="{color}" fill-opacity="0.6"/>')
    for m in page.proposal["moves"]:
        spot = located.get(m["account_id"])
        old, new = page.homes.get(m["from_owner_id"]), page.homes.get(m["to_owner_id"])
        if spot is None or old is None or new is None:
            continue
        color = territory_color(index.get(m["to_owner_id"], 0))
        parts.append(
            f'<polyline class="move" points="{xy(*old)} {xy(spot.lat, spot.lon)} {xy(*new)}" fill="none" '
            f'stroke="{color}" stroke-width="1.5"><title>{esc(m["account_id"])}: '
            f"{esc(page.names.get(m['from_owner_id'], m['from_owner_id']))} to "
            f"{esc(page.names.get(m['to_owner_id'], m['to_owner_id']))}</title></polyline>"
        )
    parts.append("</svg>")
    return (
        f"<figure><figcaption>{len(page.accounts):,} located accounts coloured by their owner after the "
        "proposal; each move runs from the old owner's home through the account to the new owner's home."
        f"</figcaption>{''.join(parts)}</figure>"
    )


def tradeoff_chart(points: Sequence[Mapping[str, Any]]) -> str:
    """The smallest band violation reachable with at most k moves, and its proven floor."""
    if not points:
        return '<p class="empty">No trade-off curve was computed.</p>'
    width, height, left, bottom = 760.0, 260.0, 56.0, 28.0
    ks = [float(p["max_moves"]) for p in points]
    top = max(max(float(p["band_violation"]) for p in points), 1e-9)
    span = max(max(ks), 1.0)

    def xy(k: float, v: float) -> str:
        x = left + (width - left - 10) * k / span
        y = (height - bottom) * (1 - v / top) + 6
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(k, float(p["band_violation"])) for k, p in zip(ks, points, strict=True))
    floor = " ".join(xy(k, float(p["bound"])) for k, p in zip(ks, points, strict=True))
    marks = "".join(
        f'<circle class="mark" cx="{xy(k, float(p["band_violation"])).split(",")[0]}" '
        f'cy="{xy(k, float(p["band_violation"])).split(",")[1]}" r="3.5" fill="#1f77b4">'
        f"<title>at most {int(k)} moves: violation {_number(p['band_violation'])}, "
        f"proven floor {_number(p['bound'])}</title></circle>"
        for k, p in zip(ks, points, strict=True)
    )
    return (
        "<figure><figcaption>Band violation left with at most k moves (blue), and the floor the solver "
        "proved (grey, dashed).</figcaption>"
        + svg_open("tradeoff", width, height, "moves versus band violation")
        + f'<polyline points="{floor}" fill="none" stroke="#999" stroke-dasharray="4 3"/>'
        + f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>{marks}'
        + f'<text x="{left}" y="{height - 6}">0 moves</text>'
        + f'<text x="{width - 90}" y="{height - 6}">{int(span)} moves</text></svg></figure>'
    )


def territory_table(territories: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """Every affected territory's targets before and after."""
    if not territories:
        return '<p class="empty">No territory changes.</p>'
    metrics = sorted({m for t in territories for m in t.get("before", {})})
    head = "".join(f"<th>{esc(m)} before</th><th>after</th>" for m in metrics)
    rows = "".join(
        f'<tr><th scope="row">{esc(names.get(t["owner_id"], t.get("name", t["owner_id"])))}</th>'
        + "".join(
            f"<td>{_number(t['before'].get(m))}</td><td>{_number(t['after'].get(m))}</td>" for m in metrics
        )
        + "</tr>"
        for t in territories
    )
    return (
        f'<table class="territories"><thead><tr><th>territory</th>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def scenario_table(scenarios: Sequence[Mapping[str, Any]], current: int) -> str:
    """The latest proposal of each scenario, side by side."""
    rows = "".join(
        f'<tr class="{"current" if s["id"] == current else ""}"><th scope="row">{esc(s["scenario"])}</th>'
        f"<td>{s['id']}</td><td>{esc(s['state'])}</td><td>{s['moves']}</td>"
        f"<td>{_number(s.get('violation_before'))}</td><td>{_number(s.get('violation_after'))}</td>"
        f"<td>{_number(s.get('gap'), 4)}</td></tr>"
        for s in scenarios
    )
    return (
        '<table class="scenarios"><thead><tr><th>scenario</th><th>proposal</th><th>state</th><th>moves</th>'
        "<th>violation before</th><th>after</th><th>gap</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )


def move_table(moves: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """Every move with its wave, date, write-back state and rationale."""
    rows = "".join(
        f"<tr><td>{m['wave']}</td><td>{esc(m.get('effective_date') or '')}</td>"
        f"<td>{esc(m['account_id'])}</td>"
        f"<td>{esc(names.get(m['from_owner_id'], m['from_owner_id']))}</td>"
        f"<td>{esc(names.get(m['to_owner_id'], m['to_owner_id']))}</td><td>{esc(m['writeback_state'])}</td>"
        f'<td class="why">{esc(m["rationale"])}</td></tr>'
        for m in moves
    )
    return (
        '<table class="moves"><thead><tr><th>wave</th><th>date</th><th>account</th><th>from</th><th>to</th>'
        "<th>write-back</th><th>rationale</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )


def render_proposal(page: ProposalPage) -> str:
    """The whole page as one HTML document (UTF-8, no external resources, no script)."""
    p = page.proposal
    solver = p.get("solver") or {}
    gap = solver.get("optimality_gap")
    proven = "proven optimal" if gap == 0 else f"within {_number(gap, 4)} of the solver's proven bound"
    title = f"Proposal {p['id']} ({p['scenario']})"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}td.why{{text-align:left}}tr.current th{{font-weight:700}}"
        "</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="meta">{esc(p["state"])}; {len(p["moves"])} moves; band violation '
        f"{_number(p.get('violation_before'))} before, {_number(p.get('violation_after'))} after; "
        f"{esc(proven)}; generated {page.generated_at.strftime('%Y-%m-%d %H:%M UTC')}.</p>"
        f'<section id="map"><h2>Accounts and moves</h2>{move_map(page)}</section>'
        f'<section id="territories"><h2>Affected territories before and after</h2>'
        f"{territory_table(p.get('territories') or [], page.names)}</section>"
        f'<section id="tradeoff"><h2>Moves versus balance</h2>'
        f"{tradeoff_chart(p.get('tradeoff') or [])}</section>"
        f'<section id="scenarios"><h2>Scenarios</h2>{scenario_table(page.scenarios, int(p["id"]))}</section>'
        f'<section id="moves"><h2>Moves</h2>{move_table(p["moves"], page.names)}</section>'
        "</body></html>\n"
    )

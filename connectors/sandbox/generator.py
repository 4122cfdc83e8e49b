"""A realistic, deterministic sandbox org (owners, accounts, opportunities, ownership history) and its CSV.

Everything is vectorised numpy so that a million accounts take seconds; the same (accounts, reps, seed,
now) always gives the same frames and the same CSV bytes (for a given numpy version).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjArray = npt.NDArray[np.object_]
ByteMatrix = npt.NDArray[np.uint8]

# The CLI's clock for generated orgs: a fixed instant, so the same seed gives the same bytes on any day.
DEFAULT_NOW: Final = datetime(2026, 11, 1, tzinfo=UTC)

CSV_FILES: Final[dict[str, tuple[str, ...]]] = {
    "owners.csv": (
        "id",
        "name",
        "email",
        "region",
        "team",
        "capacity",
        "home_lat",
        "home_lon",
        "quota",
        "active",
    ),
    "accounts.csv": (
        "id",
        "name",
        "owner_id",
        "tier",
        "industry",
        "arr",
        "potential",
        "lat",
        "lon",
        "protected",
        "modified_at",
    ),
    "opportunities.csv": (
        "id",
        "account_id",
        "owner_id",
        "name",
        "stage",
        "amount",
        "probability",
        "close_date",
        "is_closed",
        "is_won",
        "modified_at",
    ),
    "assignments.csv": ("account_id", "owner_id", "start_date", "end_date"),
}

# How each CSV column is written: text, integer, fixed decimals, true/false, YYYY-MM-DD or ISO UTC "Z".
_FORMATS: Final[dict[str, str]] = {
    "id": "str",
    "name": "str",
    "email": "str",
    "region": "str",
    "team": "str",
    "capacity": "int",
    "home_lat": "f5",
    "home_lon": "f5",
    "quota": "f2",
    "active": "bool",
    "owner_id": "str",
    "tier": "str",
    "industry": "str",
    "arr": "f2",
    "potential": "f2",
    "lat": "f5",
    "lon": "f5",
    "protected": "bool",
    "modified_at": "timestamp",
    "account_id": "str",
    "stage": "str",
    "amount": "f2",
    "probability": "f2",
    "close_date": "date",
    "is_closed": "bool",
    "is_won": "bool",
    "start_date": "date",
    "end_date": "date",
}

TIERS: Final = ("strategic", "growth", "core")
REGIONS: Final = ("NA-East", "NA-West", "EMEA", "APAC")
STAGES: Final = (
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Proposal",
    "Negotiation",
    "Closed Won",
    "Closed Lost",
)
STAGE_PROBABILITY: Final[dict[str, float]] = {
    "Prospecting": 0.10,
    "Qualification": 0.20,
    "Needs Analysis": 0.40,
    "Proposal": 0.60,
    "Negotiation": 0.80,
    "Closed Won": 1.0,
    "Closed Lost": 0.0,
}
INDUSTRIES: Final = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Telecommunications",
    "Energy",
    "Media & Entertainment",
    "Education",
    "Logistics",
    "Pharmaceuticals",
    "Real Estate",
    "Hospitality",
    "Professional Services",
    "Public Sector",
)
_INDUSTRY_WEIGHTS: Final = (14, 11, 10, 10, 8, 5, 5, 5, 4, 6, 4, 5, 4, 7, 2)

# (name, lat, lon, weight, region index): real metro centres; weights ~ share of a B2B vendor's accounts.
_METROS: Final = (
    ("New York", 40.7128, -74.0060, 10.0, 0),
    ("Boston", 42.3601, -71.0589, 4.0, 0),
    ("Washington", 38.9072, -77.0369, 4.0, 0),
    ("Toronto", 43.6532, -79.3832, 3.0, 0),
    ("Chicago", 41.8781, -87.6298, 6.0, 0),
    ("Atlanta", 33.7490, -84.3880, 3.0, 0),
    ("Miami", 25.7617, -80.1918, 2.0, 0),
    ("Dallas", 32.7767, -96.7970, 3.0, 1),
    ("Austin", 30.2672, -97.7431, 3.0, 1),
    ("Denver", 39.7392, -104.9903, 2.0, 1),
    ("Los Angeles", 34.0522, -118.2437, 5.0, 1),
    ("San Francisco", 37.7749, -122.4194, 8.0, 1),
    ("Seattle", 47.6062, -122.3321, 4.0, 1),
    ("London", 51.5074, -0.1278, 8.0, 2),
    ("Madrid", 40.4168, -3.7038, 2.0, 2),
    ("Paris", 48.8566, 2.3522, 4.0, 2),
    ("Amsterdam", 52.3676, 4.9041, 3.0, 2),
    ("Munich", 48.1351, 11.5820, 2.0, 2),
    ("Berlin", 52.5200, 13.4050, 3.0, 2),
    ("Stockholm", 59.3293, 18.0686, 2.0, 2),
    ("Dubai", 25.2048, 55.2708, 2.0, 2),
    ("Bangalore", 12.9716, 77.5946, 2.0, 3),
    ("Singapore", 1.3521, 103.8198, 3.0, 3),
    ("Seoul", 37.5665, 126.9780, 2.0, 3),
    ("Tokyo", 35.6762, 139.6503, 4.0, 3),
    ("Sydney", -33.8688, 151.2093, 3.0, 3),
)
_METRO_LAT: Final = np.array([m[1] for m in _METROS])
_METRO_LON: Final = np.array([m[2] for m in _METROS])
_METRO_P: Final = np.array([m[3] for m in _METROS]) / sum(m[3] for m in _METROS)
_METRO_REGION: Final = np.array([m[4] for m in _METROS], dtype=np.int64)
_REGION_METROS: Final = tuple(
    np.array([i for i, m in enumerate(_METROS) if m[4] == r], dtype=np.int64) for r in range(len(REGIONS))
)

_FIRST_NAMES: Final = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Mia", "James", "Amelia",
    "Lucas", "Harper", "Mateo", "Aria", "Ethan", "Chloe", "Aiden", "Priya", "Arjun", "Mei", "Wei",
    "Yuki", "Haruto", "Ji-woo", "Min-jun", "Fatima", "Omar", "Sofia", "Lukas", "Lena", "Hugo",
    "Chiara", "Marco", "Ingrid", "Lars", "Aisha", "Kwame", "Isabel", "Diego",
)  # fmt: skip
_LAST_NAMES: Final = (
    "Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Martinez", "Lopez", "Wilson",
    "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Lee", "Harris", "Clark", "Lewis", "Walker",
    "Chen", "Wang", "Kim", "Park", "Tanaka", "Sato", "Patel", "Sharma", "Khan", "Nguyen", "Mueller",
    "Schmidt", "Rossi", "Dubois", "Jansen", "Larsen", "Silva", "Novak", "Cohen", "Okafor",
)  # fmt: skip
_NAME_PREFIXES: Final = (
    "Blue", "Summit", "North", "Granite", "Silver", "Apex", "Cedar", "Harbor", "Bright", "Iron",
    "Pioneer", "Crescent", "Evergreen", "Atlas", "Nova", "Vertex", "Keystone", "Redwood", "Horizon",
    "Liberty", "Meridian", "Orchid", "Falcon", "Sterling", "Quantum", "Beacon", "Cobalt", "Juniper",
    "Lakeside", "Prairie", "Riverbend", "Stone", "Aurora", "Pacific", "Coastal", "Highland", "Polar",
    "Golden", "Crimson", "Emerald",
)  # fmt: skip
_NAME_CORES: Final = (
    "Analytics", "Logistics", "Health", "Foods", "Energy", "Systems", "Robotics", "Capital", "Media",
    "Networks", "Pharma", "Motors", "Retail", "Software", "Materials", "Aerospace", "Biotech", "Labs",
    "Dynamics", "Solutions", "Partners", "Industries", "Foundry", "Freight", "Insurance", "Brands",
    "Telecom", "Clinics", "Studios", "Devices", "Power", "Metals", "Textiles", "Ventures", "Bank",
    "Hotels", "Learning", "Security", "Cloud", "Instruments",
)  # fmt: skip
# Legal-form suffixes per region, so account names look local.
_NAME_SUFFIXES: Final = (
    ("Inc", "LLC", "Corp", "Co", "Group", "Holdings"),
    ("Inc", "LLC", "Corp", "Co", "Group", "Holdings"),
    ("Ltd", "GmbH", "AG", "SA", "BV", "plc"),
    ("Pty Ltd", "Pte Ltd", "KK", "Ltd", "Group", "Co"),
)
_OPPORTUNITY_KINDS: Final = (
    "New Business",
    "Renewal",
    "Expansion",
    "Upsell",
    "Cross-sell",
    "Pilot",
    "Add-on Seats",
    "Services",
)
_OPPORTUNITY_KIND_P: Final = (0.22, 0.26, 0.16, 0.12, 0.08, 0.05, 0.07, 0.04)

_TIER_P: Final = (0.05, 0.25, 0.70)
_ARR_MEDIAN: Final = np.array([900_000.0, 120_000.0, 25_000.0])  # per tier: strategic, growth, core
_ARR_SIGMA: Final = np.array([0.8, 0.9, 1.0])
_POTENTIAL_UPLIFT: Final = (0.7, 0.5)  # log-normal multiplier on ARR: mean, sigma (about 92% >= 1)
_PROTECTED_P: Final = np.array([0.10, 0.0158, 0.0158])  # ~2% overall, strategic more often
_SCATTER_KM: Final = 25.0
_NO_LOCATION_SHARE: Final = 0.01

_INACTIVE_SHARE: Final = 0.03
_SKEWED_SHARE: Final = 0.10
_TEAM_SIZE: Final = 8
_OFF_TERRITORY_SHARE: Final = 0.02  # accounts handed to a random rep of the region (named accounts)
# Touches a quarter per tier: mirrors monitor.metrics.DEFAULT_TOUCHES (connectors may not import the
# monitor; tests/unit/test_generator.py asserts the two agree). Capacity is calibrated to them.
TOUCHES_PER_TIER: Final = (12.0, 6.0, 2.0)  # strategic, growth, core
_TARGET_UTILIZATION: Final = 0.85  # the org's mean utilization (touches / capacity) over active reps
_CAPACITY_SIGMA: Final = 0.03  # each rep's own log-normal draw (the books themselves vary more)
_NOMINAL_CAPACITY: Final = 165.0  # an org without accounts has nothing to calibrate to

_HISTORY_ROWS_P: Final = (0.40, 0.30, 0.20, 0.10)  # 1..4 assignment rows per account
_MAX_ROWS: Final = len(_HISTORY_ROWS_P)
_HISTORY_DAYS: Final = 5 * 365
_MEAN_TENURE_FLOOR_DAYS: Final = 90  # a history of k rows reaches back at least k * 90 days
_MIN_TENURE_DAYS: Final = 30
_LOCAL_PREVIOUS_OWNER_P: Final = 0.85

_OPPS_PER_ACCOUNT: Final = np.array([6.0, 3.8, 2.5])  # per tier; mean over the tier mix is 3.0
_CLOSED_SHARE: Final = 0.70
_WIN_RATE: Final = np.array([0.35, 0.30, 0.25])
_OPEN_STAGE_P: Final = (0.30, 0.25, 0.20, 0.15, 0.10)
_AMOUNT_OF_ARR: Final = (np.log(0.3), 0.7)  # log-normal factor on the account's ARR: mu, sigma
_CLOSED_WINDOW_DAYS: Final = 3 * 365
_OPEN_WINDOW_DAYS: Final = 365
_KEEP_PREVIOUS_OWNER_P: Final = 0.5  # closed before the current owner came: credit stays with the old one
_ACCOUNT_MODIFIED_DAYS: Final = 2 * 365
_OPEN_MODIFIED_DAYS: Final = 120
_CLOSED_MODIFIED_DAYS: Final = 14

_DAY: Final = 86_400
_NAT: Final = np.iinfo(np.int64).min
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ID_ALPHABET: Final = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_CHECKSUM_ALPHABET: Final = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", dtype=np.uint8)
_CHUNK_ROWS: Final = 131_072
_NULL_SPELLINGS: Final = (b"nan", b"None", b"<NA>", b"NaT")


@dataclass(frozen=True, eq=False)
class Org:
    """A generated CRM org as four frames whose columns are those of ``CSV_FILES``, in that order.

    Dates are naive ``datetime64[s]`` at midnight (pandas has no day unit); ``modified_at`` is UTC.
    """

    owners: pd.DataFrame
    accounts: pd.DataFrame
    opportunities: pd.DataFrame
    assignments: pd.DataFrame


@dataclass(frozen=True)
class _Accounts:
    """Per-account draws before ownership: where, how big, what."""

    metro: IntArray
    region: IntArray
    lat: FloatArray  # NaN where the account has no location
    lon: FloatArray
    sort_lon: FloatArray  # the longitude before blanking, so unlocated accounts still sort into a metro
    tier: IntArray
    industry: IntArray
    arr: FloatArray
    potential: FloatArray
    protected: BoolArray
    name_code: IntArray


@dataclass(frozen=True)
class _Reps:
    """Per-rep attributes and the current owner (rep index) of every account."""

    active: BoolArray
    region: IntArray
    team: IntArray
    metro: IntArray
    account_owner: IntArray
    account_group: IntArray  # the region whose reps serve the account


@dataclass(frozen=True)
class _History:
    """Ownership history as (accounts, 4) matrices, right-aligned: column 3 is the current row."""

    rows: IntArray  # 1..4 rows per account
    starts: IntArray  # day numbers; columns before the first row hold _NAT
    owners: IntArray  # rep indexes; -1 before the first row


def generate_org(accounts: int, reps: int, seed: int, now: datetime) -> Org:
    """Generate an org of ``accounts`` accounts and ``reps`` reps as it stands at ``now`` (tz-aware).

    Deterministic in its arguments, so the sandbox CRM, tests and benchmarks see the same data.
    """
    if accounts < 0:
        msg = f"accounts must be >= 0, got {accounts}"
        raise ValueError(msg)
    if reps < 1:
        msg = f"reps must be >= 1 (every account needs an owner), got {reps}"
        raise ValueError(msg)
    if seed < 0:
        msg = f"seed must be >= 0, got {seed}"
        raise ValueError(msg)
    if now.tzinfo is None or now.utcoffset() is None:
        msg = "now must be timezone-aware (UTC)"
        raise ValueError(msg)
    now_sec = (now.astimezone(UTC) - _EPOCH) // timedelta(seconds=1)
    today = now_sec // _DAY
    # One independent stream per part, so changing how one part draws leaves the others as they were.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]

    acc = _draw_accounts(streams[0], accounts)
    team = _draw_territories(streams[1], reps, acc)
    hist = _draw_history(streams[2], team, today)
    owner_ids = _sf_ids("005", reps)
    account_ids = _sf_ids("001", accounts)
    owners = _owners_frame(streams[3], team, owner_ids)
    accounts_frame = _accounts_frame(streams[4], acc, hist, account_ids, owner_ids, team, now_sec)
    opportunities = _opportunities_frame(streams[5], acc, hist, account_ids, owner_ids, today, now_sec)
    owners = owners.assign(capacity=_calibrated_capacity(owners, team, acc))
    return Org(
        owners=owners.assign(quota=_calibrated_quota(owners, accounts_frame, opportunities, now)),
        accounts=accounts_frame,
        opportunities=opportunities,
        assignments=_assignments_frame(hist, account_ids, owner_ids),
    )


def _calibrated_capacity(owners: pd.DataFrame, team: _Reps, acc: _Accounts) -> IntArray:
    """Capacities scaled so the active reps' mean utilization is ``_TARGET_UTILIZATION``, draws kept.

    The utilization of a rep is the touches of their book (``TOUCHES_PER_TIER``) over their capacity,
    so a deliberately over-sized book is over capacity and an under-sized one has room, as in a real org.
    """
    draw = owners["capacity"].to_numpy(dtype=np.float64)
    touches = np.bincount(
        team.account_owner, weights=np.array(TOUCHES_PER_TIER)[acc.tier], minlength=len(draw)
    ).astype(np.float64)
    active = team.active
    scale = float((touches[active] / draw[active]).mean()) / _TARGET_UTILIZATION if active.any() else 0.0
    if scale <= 0:
        scale = _NOMINAL_CAPACITY
    return np.maximum(np.round(scale * draw), 1).astype(np.int64)


# How far one rep's quota strays from the team's: quotas are set per role, not per book, so an
# over-sized book shows up as over-attainment (the quota_outperformer rule) rather than being hidden.
_QUOTA_SPREAD: Final = 0.15
_QUOTA_DRAW_SIGMA: Final = 0.45
_QUOTA_STRETCH: Final = 1.1  # quotas are set a little above what the average book closes


def _calibrated_quota(
    owners: pd.DataFrame, accounts: pd.DataFrame, opportunities: pd.DataFrame, now: datetime
) -> FloatArray:
    """Quotas scaled to what an average active book won in the last 365 days, each rep's own draw kept.

    Without this the quota would be a fixed dollar figure unrelated to the org's deal sizes, and every
    rep would attain many times their quota.
    """
    quota = owners["quota"].to_numpy(dtype=np.float64)
    if len(quota) == 0:
        return quota
    end = np.datetime64(now.astimezone(UTC).replace(tzinfo=None), "s")
    close = opportunities["close_date"].to_numpy(dtype="datetime64[s]")
    recent = (
        opportunities["is_won"].to_numpy(dtype=bool)
        & (close > end - np.timedelta64(365, "D"))
        & (close <= end)
    )
    won = opportunities.loc[recent, ["account_id", "amount"]]
    book_owner = accounts.set_index("id")["owner_id"]
    won_by_owner = won.groupby(won["account_id"].map(book_owner))["amount"].sum()
    active = owners["active"].to_numpy(dtype=bool)
    won_per_rep = won_by_owner.reindex(owners["id"]).fillna(0.0).to_numpy()
    target = float(won_per_rep[active].mean()) if active.any() else 0.0
    if target <= 0:
        return quota
    spread = np.exp(_QUOTA_SPREAD / _QUOTA_DRAW_SIGMA * (np.log(quota) - np.log(np.median(quota))))
    calibrated: FloatArray = np.maximum(np.round(target * _QUOTA_STRETCH * spread, -3), 1000.0)
    return calibrated


# --- accounts and territories ------------------------------------------------------------------------


def _draw_accounts(rng: np.random.Generator, n: int) -> _Accounts:
    """Accounts clustered around metros, with heavy-tailed ARR and potential by tier."""
    metro = rng.choice(len(_METROS), size=n, p=_METRO_P).astype(np.int64)
    region = _METRO_REGION[metro]
    north_km, east_km = rng.normal(0.0, _SCATTER_KM, size=(2, n))
    base_lat = _METRO_LAT[metro]
    lat = np.clip(base_lat + north_km / 111.32, -90.0, 90.0)
    lon = _METRO_LON[metro] + east_km / (111.32 * np.cos(np.radians(base_lat)))
    lon = (lon + 180.0) % 360.0 - 180.0
    no_location = rng.random(n) < _NO_LOCATION_SHARE
    tier = rng.choice(len(TIERS), size=n, p=_TIER_P).astype(np.int64)
    arr = np.exp(rng.normal(np.log(_ARR_MEDIAN[tier]), _ARR_SIGMA[tier]))
    potential = arr * np.exp(rng.normal(*_POTENTIAL_UPLIFT, size=n))
    weights = np.array(_INDUSTRY_WEIGHTS, dtype=np.float64)
    industry = rng.choice(len(INDUSTRIES), size=n, p=weights / weights.sum()).astype(np.int64)
    protected = rng.random(n) < _PROTECTED_P[tier]
    prefix = rng.integers(0, len(_NAME_PREFIXES), size=n)
    core = rng.integers(0, len(_NAME_CORES), size=n)
    suffix = rng.integers(0, len(_NAME_SUFFIXES[0]), size=n)
    name_code = ((region * len(_NAME_PREFIXES) + prefix) * len(_NAME_CORES) + core) * len(
        _NAME_SUFFIXES[0]
    ) + suffix
    return _Accounts(
        metro=metro,
        region=region,
        lat=np.where(no_location, np.nan, np.round(lat, 5)),
        lon=np.where(no_location, np.nan, np.round(lon, 5)),
        sort_lon=lon,
        tier=tier,
        industry=industry,
        arr=np.asarray(np.round(arr, 2), dtype=np.float64),
        potential=np.round(potential, 2),
        protected=protected,
        name_code=name_code.astype(np.int64),
    )


def _apportion(total: int, weights: FloatArray, minimum: int) -> IntArray:
    """Split ``total`` into integer parts proportional to ``weights`` (largest remainder), each >= minimum."""
    parts = np.full(len(weights), minimum, dtype=np.int64)
    rest = total - minimum * len(weights)
    if rest <= 0 or weights.sum() <= 0:
        return parts
    exact = weights / weights.sum() * rest
    whole = np.floor(exact).astype(np.int64)
    leftover = rest - int(whole.sum())
    order = np.argsort(-(exact - whole), kind="stable")
    whole[order[:leftover]] += 1
    parts += whole
    return parts


def _draw_territories(rng: np.random.Generator, n_reps: int, acc: _Accounts) -> _Reps:
    """Give every account a current owner: geographic books per region, a few deliberately out of balance.

    Within each region the accounts are ordered by metro and longitude and cut into contiguous books whose
    load (half account count, half potential) is proportional to each rep's load factor; ~10% of reps get
    a factor far from 1, which makes their territories over- or under-loaded.
    """
    n = len(acc.metro)
    active = np.ones(n_reps, dtype=np.bool_)
    n_inactive = min(n_reps - 1, int(n_reps * _INACTIVE_SHARE + 0.5))
    active[rng.choice(n_reps, size=n_inactive, replace=False)] = False
    shuffled = rng.permutation(np.flatnonzero(active)).astype(np.int64)
    n_active = len(shuffled)

    if n:
        share = np.bincount(acc.region, minlength=len(REGIONS)).astype(np.float64)
    else:
        share = np.bincount(_METRO_REGION, weights=_METRO_P, minlength=len(REGIONS)).astype(np.float64)
    # Staff as many regions as we can give two reps each; the others are served by the biggest region.
    n_groups = min(int(np.count_nonzero(share)), max(1, n_active // 2))
    staffed = np.sort(np.argsort(-share, kind="stable")[:n_groups])
    largest = int(staffed[np.argmax(share[staffed])])
    serve = np.full(len(REGIONS), largest, dtype=np.int64)
    serve[staffed] = staffed
    group_share = np.bincount(serve, weights=share, minlength=len(REGIONS)).astype(np.float64)[staffed]
    per_group = _apportion(n_active, group_share, minimum=min(2, n_active // n_groups))

    starts = np.concatenate([[0], np.cumsum(per_group)]).astype(np.int64)
    factor = rng.uniform(0.92, 1.08, size=n_reps)
    if n_active >= 3:
        skewed = _pick_skewed(rng, shuffled, starts, max(1, round(n_active * _SKEWED_SHARE)))
        factor[skewed[0::2]] = rng.uniform(2.0, 3.0, size=len(skewed[0::2]))  # overloaded
        factor[skewed[1::2]] = rng.uniform(0.2, 0.45, size=len(skewed[1::2]))  # underloaded

    account_group = serve[acc.region]
    order = np.lexsort((acc.sort_lon, acc.metro, account_group))
    sorted_group = account_group[order]
    owner = np.zeros(n, dtype=np.int64)
    region = np.zeros(n_reps, dtype=np.int64)
    team = np.zeros(n_reps, dtype=np.int64)
    metro = np.zeros(n_reps, dtype=np.int64)
    teams_in_region = np.ones(len(REGIONS), dtype=np.int64)
    for i, g in enumerate(staffed.tolist()):
        book_reps = shuffled[starts[i] : starts[i + 1]]
        count = len(book_reps)
        region[book_reps] = g
        team[book_reps] = np.arange(count) // _TEAM_SIZE
        teams_in_region[g] = max(1, -(-count // _TEAM_SIZE))
        share_of_rep = factor[book_reps] / factor[book_reps].sum()
        bounds = np.cumsum(share_of_rep)
        lo, hi = np.searchsorted(sorted_group, [g, g + 1])
        books = order[lo:hi]
        if len(books) == 0:
            metros = _REGION_METROS[g]
            p = _METRO_P[metros] / _METRO_P[metros].sum()
            metro[book_reps] = rng.choice(metros, size=count, p=p)
            continue
        potential = acc.potential[books]
        total = float(potential.sum())
        load = 0.5 / len(books) + (0.5 * potential / total if total > 0 else 0.5 / len(books))
        position = np.cumsum(load) - load / 2
        owner[books] = book_reps[np.minimum(np.searchsorted(bounds, position, side="right"), count - 1)]
        # A rep lives in the metro at the middle of their book (or the region's main metro).
        middle = np.minimum(np.searchsorted(position, bounds - share_of_rep / 2), len(books) - 1)
        home = acc.metro[books[middle]]
        main_metro = _REGION_METROS[g][np.argmax(_METRO_P[_REGION_METROS[g]])]
        metro[book_reps] = np.where(_METRO_REGION[home] == g, home, main_metro)

    # A few accounts sit with another rep of the region (named accounts, old deals, favours).
    off_territory = rng.random(n) < _OFF_TERRITORY_SHARE
    slot = np.searchsorted(staffed, account_group)
    pick = starts[slot] + np.floor(rng.random(n) * per_group[slot]).astype(np.int64)
    owner = np.where(off_territory, shuffled[np.minimum(pick, n_active - 1)], owner)

    inactive = np.flatnonzero(~active)
    metro[inactive] = rng.choice(len(_METROS), size=len(inactive), p=_METRO_P)
    region[inactive] = _METRO_REGION[metro[inactive]]
    team[inactive] = np.floor(rng.random(len(inactive)) * teams_in_region[region[inactive]]).astype(np.int64)
    return _Reps(
        active=active,
        region=region,
        team=team,
        metro=metro,
        account_owner=owner,
        account_group=account_group,
    )


def _pick_skewed(rng: np.random.Generator, shuffled: IntArray, starts: IntArray, count: int) -> IntArray:
    """``count`` reps to put out of balance, taken round-robin from the regions with most reps first.

    A factor changes a rep's share of their region only, so skewing one rep per region, in regions with
    at least three reps where possible, is what makes them stand out across the whole org.
    """
    sizes = np.diff(starts)
    groups = [int(g) for g in np.argsort(-sizes, kind="stable") if sizes[g] > 0]
    eligible = [g for g in groups if sizes[g] >= 3] or groups
    members = [shuffled[starts[g] + rng.permutation(int(sizes[g]))] for g in eligible]
    picked: list[int] = []
    for depth in range(int(sizes.max())):
        picked.extend(int(m[depth]) for m in members if depth < len(m))
    return np.array(picked[:count], dtype=np.int64)


# --- ownership history -------------------------------------------------------------------------------


def _draw_history(rng: np.random.Generator, team: _Reps, today: int) -> _History:
    """1-4 contiguous tenures per account over the last five years, the last one with the current owner."""
    n = len(team.account_owner)
    n_reps = len(team.active)
    if n_reps > 1:
        rows = rng.choice(_MAX_ROWS, size=n, p=_HISTORY_ROWS_P).astype(np.int64) + 1
    else:
        rows = np.ones(n, dtype=np.int64)
    back = rng.integers(_MEAN_TENURE_FLOOR_DAYS * rows, _HISTORY_DAYS + 1)
    first = today - back
    column = np.arange(_MAX_ROWS, dtype=np.int64)
    rank = column[None, :] - (_MAX_ROWS - rows)[:, None]  # 0 for the first row, negative before it
    valid = rank >= 0
    weight = np.where(valid, rng.gamma(2.0, size=(n, _MAX_ROWS)), 0.0)
    cumulative = np.cumsum(weight, axis=1)
    before = (cumulative - weight) / cumulative[:, -1:]
    # Tenures of at least _MIN_TENURE_DAYS: the floor of a non-decreasing share of the slack, plus the
    # row's rank times the minimum; the current row starts at least that long before today.
    slack = (back - rows * _MIN_TENURE_DAYS)[:, None]
    starts = first[:, None] + np.floor(before * slack).astype(np.int64) + rank * _MIN_TENURE_DAYS
    starts = np.where(valid, starts, _NAT)

    owners = np.full((n, _MAX_ROWS), -1, dtype=np.int64)
    owners[:, -1] = team.account_owner
    for col in range(_MAX_ROWS - 2, -1, -1):
        idx = np.flatnonzero(valid[:, col])
        owners[idx, col] = _previous_owners(rng, owners[idx, col + 1], team.account_group[idx], team.region)
    return _History(rows=rows, starts=starts, owners=owners)


def _previous_owners(
    rng: np.random.Generator, successor: IntArray, group: IntArray, rep_region: IntArray
) -> IntArray:
    """A rep other than ``successor`` for each row: mostly from the account's region, else anyone."""
    n_reps = len(rep_region)
    pool = np.argsort(rep_region, kind="stable")
    size = np.bincount(rep_region, minlength=len(REGIONS))
    offset = np.cumsum(size) - size
    position = np.empty(n_reps, dtype=np.int64)
    position[pool] = np.arange(n_reps) - offset[rep_region[pool]]
    same = rep_region[successor] == group
    candidates = size[group] - same
    local = (rng.random(len(successor)) < _LOCAL_PREVIOUS_OWNER_P) & (candidates > 0)
    u = rng.random(len(successor))
    j = np.floor(u * np.maximum(candidates, 1)).astype(np.int64)
    j += same & (j >= position[successor])
    local_pick = pool[np.minimum(offset[group] + j, n_reps - 1)]
    anyone = np.floor(u * (n_reps - 1)).astype(np.int64)
    anyone += anyone >= successor
    return np.where(local, local_pick, anyone).astype(np.int64)


# --- frames ------------------------------------------------------------------------------------------


def _owners_frame(rng: np.random.Generator, team: _Reps, ids: ObjArray) -> pd.DataFrame:
    """The reps: names, unique emails, region/team, capacity, home near their metro, quota."""
    n = len(team.active)
    first = rng.integers(0, len(_FIRST_NAMES), size=n)
    last = rng.integers(0, len(_LAST_NAMES), size=n)
    north_km, east_km = rng.normal(0.0, 12.0, size=(2, n))
    base_lat = _METRO_LAT[team.metro]
    home_lat = np.round(base_lat + north_km / 111.32, 5)
    home_lon = np.round(_METRO_LON[team.metro] + east_km / (111.32 * np.cos(np.radians(base_lat))), 5)
    quota = np.round(np.clip(rng.lognormal(np.log(1_200_000.0), 0.45, size=n), 300_000.0, 5_000_000.0), -3)
    capacity = rng.lognormal(0.0, _CAPACITY_SIGMA, size=n)  # the rep's own draw; calibrated later
    # Reps are few (thousands at most), so plain Python over them is clearer than string arrays.
    names = [
        f"{_FIRST_NAMES[f]} {_LAST_NAMES[s]}" for f, s in zip(first.tolist(), last.tolist(), strict=True)
    ]
    emails = [
        f"{_FIRST_NAMES[f]}.{_LAST_NAMES[s]}.{i + 1}@example.com".lower().replace("-", "")
        for i, (f, s) in enumerate(zip(first.tolist(), last.tolist(), strict=True))
    ]
    teams = [
        f"{REGIONS[r]}-{t + 1:02d}" for r, t in zip(team.region.tolist(), team.team.tolist(), strict=True)
    ]
    return pd.DataFrame(
        {
            "id": _text(ids),
            "name": _text(np.array(names, dtype=object)),
            "email": _text(np.array(emails, dtype=object)),
            "region": _text(np.array(REGIONS, dtype=object)[team.region]),
            "team": _text(np.array(teams, dtype=object)),
            "capacity": capacity,
            "home_lat": home_lat,
            "home_lon": home_lon,
            "quota": quota.astype(np.float64),
            "active": team.active,
        },
        copy=False,
    )


def _accounts_frame(
    rng: np.random.Generator,
    acc: _Accounts,
    hist: _History,
    ids: ObjArray,
    owner_ids: ObjArray,
    team: _Reps,
    now_sec: int,
) -> pd.DataFrame:
    """The accounts with their current owner; modified since the current owner came, within two years."""
    n = len(acc.metro)
    current_start = hist.starts[:, -1] * _DAY
    earliest = np.maximum(now_sec - _ACCOUNT_MODIFIED_DAYS * _DAY, current_start)
    modified = earliest + np.floor(rng.random(n) * (now_sec - earliest + 1)).astype(np.int64)
    return pd.DataFrame(
        {
            "id": _text(ids),
            "name": _text(_account_names()[acc.name_code]),
            "owner_id": _text(owner_ids[team.account_owner]),
            "tier": _text(np.array(TIERS, dtype=object)[acc.tier]),
            "industry": _text(np.array(INDUSTRIES, dtype=object)[acc.industry]),
            "arr": acc.arr,
            "potential": acc.potential,
            "lat": acc.lat,
            "lon": acc.lon,
            "protected": acc.protected,
            "modified_at": _timestamps(modified),
        },
        copy=False,
    )


def _opportunities_frame(
    rng: np.random.Generator,
    acc: _Accounts,
    hist: _History,
    account_ids: ObjArray,
    owner_ids: ObjArray,
    today: int,
    now_sec: int,
) -> pd.DataFrame:
    """About three deals per account: closed over the last three years, open over the next one."""
    account = np.repeat(np.arange(len(acc.tier), dtype=np.int64), rng.poisson(_OPPS_PER_ACCOUNT[acc.tier]))
    m = len(account)
    tier = acc.tier[account]
    closed = rng.random(m) < _CLOSED_SHARE
    won = closed & (rng.random(m) < _WIN_RATE[tier])
    stage = np.where(closed, np.where(won, 5, 6), rng.choice(5, size=m, p=_OPEN_STAGE_P)).astype(np.int64)
    probability = np.array([STAGE_PROBABILITY[s] for s in STAGES])[stage]
    amount = np.round(acc.arr[account] * np.exp(rng.normal(*_AMOUNT_OF_ARR, size=m)), 2)

    first_start = hist.starts[np.arange(len(acc.tier)), _MAX_ROWS - hist.rows][account]
    earliest = np.maximum(today - _CLOSED_WINDOW_DAYS, first_start)
    past = earliest + np.floor(rng.random(m) * (today - earliest + 1)).astype(np.int64)
    future = today + rng.integers(1, _OPEN_WINDOW_DAYS + 1, size=m)
    close = np.where(closed, past, future)

    owner = hist.owners[account, -1]
    credited = closed & (close < hist.starts[account, -1]) & (rng.random(m) < _KEEP_PREVIOUS_OWNER_P)
    old = np.flatnonzero(credited)
    row = (hist.starts[account[old]] <= close[old, None]).sum(axis=1) - 1
    owner[old] = hist.owners[account[old], row]

    closed_at = close * _DAY + rng.integers(0, _CLOSED_MODIFIED_DAYS * _DAY, size=m)
    opened_at = now_sec - rng.integers(0, _OPEN_MODIFIED_DAYS * _DAY, size=m)
    modified = np.minimum(np.where(closed, closed_at, opened_at), now_sec)
    kind = rng.choice(len(_OPPORTUNITY_KINDS), size=m, p=_OPPORTUNITY_KIND_P)
    name_code = acc.name_code[account] * len(_OPPORTUNITY_KINDS) + kind
    return pd.DataFrame(
        {
            "id": _text(_sf_ids("006", m)),
            "account_id": _text(account_ids[account]),
            "owner_id": _text(owner_ids[owner]),
            "name": _text(_opportunity_names(name_code)),
            "stage": _text(np.array(STAGES, dtype=object)[stage]),
            "amount": amount,
            "probability": probability,
            "close_date": _dates(close),
            "is_closed": closed,
            "is_won": won,
            "modified_at": _timestamps(modified),
        },
        copy=False,
    )


def _assignments_frame(hist: _History, account_ids: ObjArray, owner_ids: ObjArray) -> pd.DataFrame:
    """One row per tenure, ordered by account then start; the end of a row is the start of the next."""
    n = len(hist.rows)
    ends = np.concatenate([hist.starts[:, 1:], np.full((n, 1), _NAT, dtype=np.int64)], axis=1)
    valid = (hist.owners >= 0).ravel()
    account = np.repeat(np.arange(n, dtype=np.int64), _MAX_ROWS)[valid]
    return pd.DataFrame(
        {
            "account_id": _text(account_ids[account]),
            "owner_id": _text(owner_ids[hist.owners.ravel()[valid]]),
            "start_date": _dates(hist.starts.ravel()[valid]),
            "end_date": _dates(ends.ravel()[valid]),
        },
        copy=False,
    )


def _text(values: ObjArray) -> pd.Series[str]:
    """A pandas text column (``str`` dtype) from an object array of Python strings."""
    return pd.Series(values, dtype="str")


def _timestamps(seconds: IntArray) -> pd.Series[pd.Timestamp]:
    """UTC timestamps of second precision from seconds since the epoch."""
    return pd.Series(seconds.astype("datetime64[s]")).dt.tz_localize("UTC")


def _dates(days: IntArray) -> pd.Series[pd.Timestamp]:
    """Calendar days (naive midnight, second unit) from day numbers; _NAT gives NaT."""
    return pd.Series(days.astype("datetime64[D]").astype("datetime64[s]"))


@functools.cache
def _account_names() -> ObjArray:
    """Every account name, indexed by name code (region, prefix, core, suffix); built on first use."""
    names = np.array(
        [
            f"{prefix} {core} {suffix}"
            for suffixes in _NAME_SUFFIXES
            for prefix in _NAME_PREFIXES
            for core in _NAME_CORES
            for suffix in suffixes
        ],
        dtype=object,
    )
    names.flags.writeable = False
    return names


def _opportunity_names(codes: IntArray) -> ObjArray:
    """Names for opportunity name codes (account name code, kind), each distinct name made once."""
    if len(codes) == 0:
        return np.empty(0, dtype=object)
    present = np.zeros(int(codes.max()) + 1, dtype=np.bool_)
    present[codes] = True
    distinct = np.flatnonzero(present)
    accounts = _account_names()[distinct // len(_OPPORTUNITY_KINDS)].tolist()
    kinds = np.array(_OPPORTUNITY_KINDS, dtype=object)[distinct % len(_OPPORTUNITY_KINDS)].tolist()
    table = np.array([f"{a} - {k}" for a, k in zip(accounts, kinds, strict=True)], dtype=object)
    slot = np.cumsum(present) - 1
    names: ObjArray = table[slot[codes]]
    return names


def _sf_ids(prefix: str, n: int) -> ObjArray:
    """``n`` Salesforce-style 18-character ids: key prefix, zero padding, base-36 counter, case checksum.

    The checksum is Salesforce's: per block of five characters, a bit for each upper-case letter.
    """
    width = 15
    places = 1
    while 36**places < n + 1:
        places += 1
    if len(prefix) + places > width:
        msg = f"too many ids for prefix {prefix}: {n}"
        raise ValueError(msg)
    digits = np.empty((places, n), dtype=np.intp)
    counter = np.arange(1, n + 1, dtype=np.float64)  # exact: float64 holds these integers exactly
    for k in range(places - 1, -1, -1):
        quotient = np.floor(counter / 36.0)
        digits[k] = counter - quotient * 36.0
        counter = quotient
    buf = np.full((n, width + 4), ord("0"), dtype=np.uint8)
    buf[:, : len(prefix)] = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    buf[:, width - places : width] = _ID_ALPHABET[digits].T
    checksum = np.zeros((3, n), dtype=np.intp)  # the prefix and the zero padding hold no letters
    for k in range(places):
        place = width - places + k
        checksum[place // 5] += (digits[k] >= 10) << (place % 5)
    buf[:, width : width + 3] = _CHECKSUM_ALPHABET[checksum].T
    buf[:, -1] = ord("\n")
    # One decode and split makes all the str objects in C, far faster than per-row formatting.
    text = buf.tobytes().decode("ascii").split("\n")[:-1]
    return np.array(text, dtype=object)


# --- CSV ---------------------------------------------------------------------------------------------


def write_csv(org: Org, out_dir: Path) -> dict[str, int]:
    """Write the org as ``CSV_FILES`` into ``out_dir`` (created); returns rows written per file.

    Each file is written under a temporary name and renamed, so a reader never sees half a file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "owners.csv": org.owners,
        "accounts.csv": org.accounts,
        "opportunities.csv": org.opportunities,
        "assignments.csv": org.assignments,
    }
    written: dict[str, int] = {}
    for name, columns in CSV_FILES.items():
        _write_file(frames[name], columns, out_dir / name)
        written[name] = len(frames[name])
    return written


def _write_file(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> None:
    """Stream one CSV file to a partial name, then rename it; on failure the partial file is removed.

    (A writer thread overlapping encoding with joining and writing was tried: no faster on two busy cores,
    and it cost more CPU.)
    """
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as fh:
            for chunk in iter_csv_chunks(frame, columns):
                fh.write(chunk)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def iter_csv_chunks(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    header: bool = True,
    chunk_rows: int = _CHUNK_ROWS,
) -> Iterator[bytes]:
    """``frame`` as CSV bytes in the import format (true/false, YYYY-MM-DD, ISO ``Z``, empty = null).

    Chunks of ``chunk_rows`` rows keep memory bounded; the header row comes first unless ``header`` is
    false (e.g. for Postgres ``COPY ... (FORMAT csv)``). Columns are encoded by name (see ``_FORMATS``).
    """
    names = [str(c) for c in (frame.columns if columns is None else columns)]
    chunks = _encoded_chunks(frame, names, chunk_rows)  # validates before the header goes out
    if header:
        yield _header(names)
    for fields, n in chunks:
        yield _join_row_bytes(fields, n)


def _header(columns: Sequence[str]) -> bytes:
    """The header row."""
    return (",".join(columns) + "\n").encode("utf-8")


def _encoded_chunks(
    frame: pd.DataFrame, columns: Sequence[str], chunk_rows: int
) -> Iterator[tuple[list[ByteMatrix], int]]:
    """Each chunk of rows as one NUL-padded byte matrix per column, with its row count."""
    unknown = [c for c in columns if c not in _FORMATS]
    if unknown:
        msg = f"no CSV format for columns {unknown}"
        raise ValueError(msg)
    if chunk_rows < 1:
        msg = f"chunk_rows must be >= 1, got {chunk_rows}"
        raise ValueError(msg)
    encoders = [_column_encoder(frame[c], _FORMATS[c]) for c in columns]
    return (
        (
            [encode(lo, min(lo + chunk_rows, len(frame))) for encode in encoders],
            min(chunk_rows, len(frame) - lo),
        )
        for lo in range(0, len(frame), chunk_rows)
    )


def _join_row_bytes(fields: list[ByteMatrix], n: int) -> bytes:
    """Lay NUL-padded field matrices side by side with commas and newlines, then drop the padding."""
    width = sum(f.shape[1] for f in fields) + len(fields)
    buf = np.empty((n, width), dtype=np.uint8)
    at = 0
    for i, field in enumerate(fields):
        w = field.shape[1]
        buf[:, at : at + w] = field
        buf[:, at + w] = ord(",") if i < len(fields) - 1 else ord("\n")
        at += w + 1
    flat = buf.reshape(-1)
    data: bytes = flat[flat != 0].tobytes()
    return data


def _column_encoder(series: pd.Series[Any], kind: str) -> Callable[[int, int], ByteMatrix]:
    """A function of a row range giving that slice of ``series`` as a NUL-padded (rows, width) matrix."""
    if kind == "str":
        objects = series.to_numpy(dtype=object)
        return lambda lo, hi: _encode_text(objects[lo:hi])
    if kind == "bool":
        missing = series.isna().to_numpy(dtype=np.bool_)
        flags = series.to_numpy(dtype=np.bool_, na_value=False)
        return lambda lo, hi: _encode_bool(flags[lo:hi], missing[lo:hi])
    if kind in ("date", "timestamp"):
        seconds = _epoch_seconds(series)
        missing = seconds == _NAT
        present = seconds[~missing] // _DAY
        first = int(present.min()) if len(present) else 0
        table = _date_table(first, int(present.max()) if len(present) else 0)
        days = np.where(missing, first, seconds // _DAY)  # missing rows point at a real entry, then blank
        if kind == "date":
            return lambda lo, hi: _encode_date(days[lo:hi] - first, missing[lo:hi], table)
        return lambda lo, hi: _encode_timestamp(seconds[lo:hi], days[lo:hi], first, missing[lo:hi], table)
    decimals = {"int": 0, "f2": 2, "f5": 5}[kind]
    numbers = series.to_numpy(dtype=np.float64, na_value=np.nan)
    return lambda lo, hi: _encode_number(numbers[lo:hi], decimals)


def _epoch_seconds(series: pd.Series[Any]) -> IntArray:
    """Seconds since the epoch (UTC) of a datetime-like column; missing values give _NAT."""
    values = series
    if not pd.api.types.is_datetime64_any_dtype(values):
        values = pd.to_datetime(values, utc=True)
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[s]").view(np.int64)


def _encode_text(values: ObjArray) -> ByteMatrix:
    """UTF-8 text, quoted (RFC 4180) only where a value holds a comma, quote or line break; nulls empty."""
    n = len(values)
    try:
        joined = "\n".join(values)  # C-speed for str; anything else (NaN, None, numbers) goes the long way
    except TypeError:
        joined = None
    if joined is not None and not any(c in joined for c in ',"\r'):
        matrix = _split_lines(joined.encode("utf-8"), n)
        if matrix is not None:
            return matrix
    try:
        encoded = values.astype(np.bytes_)
    except UnicodeEncodeError:
        encoded = np.char.encode(values.astype(np.str_), "utf-8")
    # Nulls come out spelled (nan, None, <NA>, NaT); only rows spelled so are checked, which beats isna.
    spelled = np.zeros(n, dtype=np.bool_)
    for word in _NULL_SPELLINGS:
        spelled |= encoded == word
    for i in np.flatnonzero(spelled).tolist():
        if pd.isna(values[i]):
            encoded[i] = b""
    raw = encoded.tobytes()
    if any(ch in raw for ch in (b",", b'"', b"\n", b"\r")):
        encoded = _quote(encoded)
    return encoded.view(np.uint8).reshape(n, encoded.dtype.itemsize)


def _split_lines(raw: bytes, n: int) -> ByteMatrix | None:
    """The ``n`` newline-separated values of ``raw`` as rows of a NUL-padded matrix.

    None when the count of line breaks says a value holds one of its own (it then needs quoting).
    """
    if n == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    data = np.frombuffer(raw, dtype=np.uint8)
    ends = np.append(np.flatnonzero(data == ord("\n")), len(data))
    if len(ends) != n:
        return None
    lengths = np.diff(ends, prepend=-1) - 1
    width = int(lengths.max())
    if (lengths == width).all():  # fixed width (ids): the values are already rows, one separator apart
        return np.append(data, np.uint8(ord("\n"))).reshape(n, width + 1)[:, :width]
    matrix = np.zeros((n, width), dtype=np.uint8)
    matrix[np.arange(width) < lengths[:, None]] = data[data != ord("\n")]
    return matrix


def _quote(encoded: npt.NDArray[np.bytes_]) -> npt.NDArray[np.bytes_]:
    """Quote the values that need it; only those rows go through Python."""
    special = np.zeros(256, dtype=np.bool_)
    special[list(b',"\n\r')] = True
    matrix = encoded.view(np.uint8).reshape(len(encoded), encoded.dtype.itemsize)
    items = encoded.astype(object)
    for i in np.flatnonzero(special[matrix].any(axis=1)).tolist():
        items[i] = b'"' + items[i].replace(b'"', b'""') + b'"'
    return items.astype(np.bytes_)


def _encode_bool(flags: BoolArray, missing: BoolArray) -> ByteMatrix:
    """``true`` / ``false``; missing values stay empty."""
    words = np.array([b"false", b"true"], dtype="S5")[flags.astype(np.intp)]
    matrix = words.view(np.uint8).reshape(len(flags), 5)
    matrix[missing] = 0
    return matrix


def _encode_number(values: FloatArray, decimals: int) -> ByteMatrix:
    """Fixed-point text with ``decimals`` places (``-12.50``); NaN stays empty.

    Digits come from float arithmetic, which is exact here because the scaled values stay below 2**50.
    """
    n = len(values)
    missing = np.isnan(values)
    scale = 10.0**decimals
    scaled = np.rint(np.abs(np.where(missing, 0.0, values)) * scale)
    if n and scaled.max() >= 2.0**50:
        msg = f"numbers up to {2.0**50 / scale:.0f} can be written, got {scaled.max() / scale}"
        raise ValueError(msg)
    whole = np.floor(scaled / scale)
    fraction = scaled - whole * scale
    digits = len(str(int(whole.max()))) if n else 1
    rows = 1 + digits + (1 + decimals if decimals else 0)
    out = np.empty((rows, n), dtype=np.uint8)
    out[0] = np.where((values < 0) & (scaled > 0), ord("-"), 0)
    rest = whole
    for k in range(digits):
        quotient = np.floor(rest / 10.0)
        digit = (rest - quotient * 10.0).astype(np.uint8) + ord("0")
        out[digits - k] = np.where((rest == 0) & (k > 0), 0, digit)  # leading zeros become padding
        rest = quotient
    if decimals:
        out[digits + 1] = ord(".")
        rest = fraction
        for k in range(decimals):
            quotient = np.floor(rest / 10.0)
            out[rows - 1 - k] = (rest - quotient * 10.0).astype(np.uint8) + ord("0")
            rest = quotient
    out[:, missing] = 0
    return out.T


@functools.cache
def _time_of_day_table() -> npt.NDArray[np.bytes_]:
    """``HH:MM:SS`` for every second of a day, built once on first use."""
    second = np.arange(_DAY)
    parts = (second // 3600, second // 60 % 60, second % 60)
    table = np.full((_DAY, 8), ord(":"), dtype=np.uint8)
    for i, part in enumerate(parts):
        table[:, 3 * i] = part // 10 + ord("0")
        table[:, 3 * i + 1] = part % 10 + ord("0")
    result = table.view("S8").ravel()
    result.flags.writeable = False
    return result


def _date_table(first: int, last: int) -> npt.NDArray[np.bytes_]:
    """``YYYY-MM-DD`` for every day number from ``first`` to ``last``."""
    if first < -719_162 or last > 2_932_896:  # 0001-01-01 .. 9999-12-31
        msg = "dates outside the years 1..9999 cannot be written"
        raise ValueError(msg)
    return np.arange(first, last + 1, dtype=np.int64).astype("datetime64[D]").astype("S10")


def _encode_date(offset: IntArray, missing: BoolArray, table: npt.NDArray[np.bytes_]) -> ByteMatrix:
    """``YYYY-MM-DD`` from day offsets into ``table``; missing values stay empty."""
    matrix = table[offset].view(np.uint8).reshape(len(offset), 10)
    matrix[missing] = 0
    return matrix


def _encode_timestamp(
    seconds: IntArray, days: IntArray, first: int, missing: BoolArray, table: npt.NDArray[np.bytes_]
) -> ByteMatrix:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC; missing values stay empty."""
    n = len(seconds)
    matrix = np.empty((n, 20), dtype=np.uint8)
    matrix[:, :10] = table[days - first].view(np.uint8).reshape(n, 10)
    matrix[:, 10] = ord("T")
    clock = np.where(missing, 0, seconds - days * _DAY)
    matrix[:, 11:19] = _time_of_day_table()[clock].view(np.uint8).reshape(n, 8)
    matrix[:, 19] = ord("Z")
    matrix[missing] = 0
    return matrix

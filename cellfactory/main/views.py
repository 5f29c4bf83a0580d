from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Blueprint, current_app, flash, g, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user
from werkzeug.wrappers import Response

from cellfactory.auth.models import User
from cellfactory.batches.models import BatchStatus
from cellfactory.core import permissions
from cellfactory.core.clock import utcnow
from cellfactory.core.i18n import _
from cellfactory.core.permissions import any_authenticated_user, public
from cellfactory.extensions import db
from cellfactory.inbox.services import inbox_for
from cellfactory.main.health import health
from cellfactory.signatures.services import signing_enabled

bp = Blueprint("main", __name__)

# The release turnaround covers the batches first certified in this many days up to now (labelled on the page).
TURNAROUND_WINDOW_DAYS = 365


@bp.route("/")
@any_authenticated_user
def dashboard() -> str:
    """What waits for the person, a section per role they hold, and their sites at a glance."""
    user = current_user._get_current_object()
    can_sign, missing = signing_enabled(user)
    sites = g.get("user_sites") or []
    return render_template("main/dashboard.html", can_sign=can_sign, missing=missing,
                           sections=inbox_for(user, sites), network=network_overview(user, sites),
                           batch_states=list(BatchStatus),
                           turnaround_window_days=TURNAROUND_WINDOW_DAYS)


# --- the network at a glance ------------------------------------------------------------------------


@dataclass
class SiteOverview:
    code: str
    name: str
    batches: dict[str, int] = field(default_factory=dict)  # batch status -> count
    units_available: dict[str, int] = field(default_factory=dict)  # product code -> available units
    # The same units by status (available at the site that made them, received at another), product code -> count:
    # the unit list filters by one status, so each figure links to its own.
    units_in_stock: dict[str, dict[str, int]] = field(default_factory=dict)
    shipments_out: int = 0  # in transit from the site
    shipments_in: int = 0  # in transit to the site
    open_deviations: int = 0
    # Median days from batch start to first QP certification, over the batches first certified in the last
    # TURNAROUND_WINDOW_DAYS.
    turnaround_days: float | None = None
    certified: int = 0  # batches the median is taken over

    @property
    def batch_total(self) -> int:
        return sum(self.batches.values())


def network_overview(user: User, active_sites: list | None = None) -> list[SiteOverview]:
    """Per site the user may read GMP data of (every site for network QA and auditors): batches by state,
    units available by product, shipments in transit, open deviations and release turnaround (over the batches first
    certified in the last TURNAROUND_WINDOW_DAYS).

    A fixed handful of grouped queries, whatever the number of sites and batches. `active_sites`: the user's active
    sites, when the request has read them already."""
    from cellfactory.batches.models import Batch
    from cellfactory.deviations.models import Deviation, DeviationStatus
    from cellfactory.products.models import Product
    from cellfactory.releases.models import BatchDecision, DecisionKind
    from cellfactory.sites.models import Site
    from cellfactory.units.models import Shipment, ShipmentStatus, Unit, UnitStatus

    readable = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if not readable:
        return []
    network = None in readable

    def scoped(query: sa.Select, column) -> sa.Select:
        return query if network else query.where(column.in_(readable))

    if active_sites:
        chosen = sorted((site for site in active_sites if network or site.id in readable), key=lambda s: s.code)
    else:
        chosen = list(db.session.scalars(scoped(sa.select(Site).where(Site.active.is_(True)), Site.id)
                                         .order_by(Site.code)))
    sites = {site.id: SiteOverview(site.code, site.name) for site in chosen}
    # Release turnaround over a window, not the whole history: the batches first certified in the last
    # TURNAROUND_WINDOW_DAYS, i.e. whose earliest certifying decision is in the window. Such a batch changed status
    # in the window too (a transition stamps status_changed_at after signing its decision, and later transitions
    # only move it on), so only the batches that changed status since then are looked at, with their decisions
    # found by batch: the rows read are the window's, whatever the years of history behind them.
    certifying = [k for k in DecisionKind if k.certifies and k is not DecisionKind.REJECTION]
    since = utcnow() - dt.timedelta(days=TURNAROUND_WINDOW_DAYS)
    first = sa.func.min(BatchDecision.decided_at)
    # Batches by state, units in stock by product, open deviations, shipments in transit and the start and first
    # certification of each batch certified in the window (as text, the one shape of the statement): one statement.
    transit = sa.and_(Shipment.status == ShipmentStatus.IN_TRANSIT)
    if not network:
        transit = sa.and_(transit, sa.or_(Shipment.from_site_id.in_(readable), Shipment.to_site_id.in_(readable)))
    available = (UnitStatus.AVAILABLE, UnitStatus.RECEIVED)
    nothing = sa.null()
    counts = sa.union_all(
        scoped(sa.select(sa.literal("batch"), Batch.site_id, sa.cast(Batch.status, sa.String), nothing,
                         sa.func.count()).group_by(Batch.site_id, Batch.status), Batch.site_id),
        scoped(sa.select(sa.literal("unit"), Unit.site_id, sa.cast(Unit.status, sa.String), Product.code,
                         sa.func.count()).join(Batch, Batch.id == Unit.batch_id)
               .join(Product, Product.id == Batch.product_id).where(Unit.status.in_(available))
               .group_by(Unit.site_id, Product.code, Unit.status), Unit.site_id),
        scoped(sa.select(sa.literal("deviation"), Deviation.site_id, nothing, nothing, sa.func.count())
               .where(Deviation.status == DeviationStatus.OPEN).group_by(Deviation.site_id), Deviation.site_id),
        sa.select(sa.literal("out"), Shipment.from_site_id, nothing, nothing, sa.func.count()).where(transit)
        .group_by(Shipment.from_site_id),
        sa.select(sa.literal("in"), Shipment.to_site_id, nothing, nothing, sa.func.count()).where(transit)
        .group_by(Shipment.to_site_id),
        scoped(sa.select(sa.literal("certified"), Batch.site_id, sa.cast(Batch.started_at, sa.String),
                         sa.cast(first, sa.String), sa.literal(1))
               .join(BatchDecision, BatchDecision.batch_id == Batch.id)
               # As a subquery, so that SQLite's planner, which cannot tell how few rows a date range holds,
               # still starts from ix_batch_status_changed_at rather than scanning every batch.
               .where(Batch.id.in_(sa.select(Batch.id).where(Batch.status_changed_at >= since)),
                      BatchDecision.kind.in_(certifying))
               .group_by(Batch.id, Batch.site_id, Batch.started_at).having(first >= since), Batch.site_id))
    durations: dict[int, list[float]] = {}
    for what, site_id, status, product, count in db.session.execute(counts):
        overview = sites.get(site_id)
        if overview is None:
            continue
        if what == "batch":
            overview.batches[BatchStatus(status).label] = count
        elif what == "unit":
            overview.units_available[product] = overview.units_available.get(product, 0) + count
            overview.units_in_stock.setdefault(product, {})[UnitStatus(status).value] = count
        elif what == "deviation":
            overview.open_deviations = count
        elif what == "out":
            overview.shipments_out = count
        elif what == "in":
            overview.shipments_in = count
        else:
            started, first_at = _instant_text(status), _instant_text(product)
            durations.setdefault(site_id, []).append(max(0.0, (first_at - started).total_seconds() / 86400))
    for site_id, days in durations.items():
        if site_id in sites:
            sites[site_id].turnaround_days = statistics.median(days)
            sites[site_id].certified = len(days)
    return list(sites.values())


def _instant_text(text: str) -> dt.datetime:
    """An instant the database gave as text: SQLite's stored UTC without an offset, PostgreSQL's with one."""
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@bp.route("/site", methods=["POST"])
@any_authenticated_user
def switch_site() -> Response:
    try:
        site_id = int(request.form.get("site_id", ""))
    except ValueError:
        site_id = -1
    if not any(site.id == site_id for site in g.user_sites):
        flash(_("You have no role at that site."), "error")
    else:
        session["site_id"] = site_id
        flash(_("Site switched."), "success")
    return redirect(url_for("main.dashboard"))


@bp.route("/healthz")
@public
def healthz() -> tuple[Response, int]:
    """For load balancers and monitoring: 200 when the database, its schema and the app's keys and files are
    right, 503 otherwise; never cached."""
    report = health(current_app.config["CELLFACTORY"])
    response = jsonify(report)
    response.headers["Cache-Control"] = "no-store"
    return response, 200 if report["status"] == "ok" else 503

"""Price before spending: what a list of requests will cost, and a cap that a batch keeps to.

A request's price per image comes from, in order: the journal's last price for the same host
(cache scope), model and resolution (what the host itself said it charged), else the provider's
published price table (with where and when it was read). A request the journal would serve from
its cache costs nothing. A request with neither price is *unpriced*: an estimate says so, and a cap
refuses it rather than guess.

``Budget`` keeps a running batch under ``max_cost``: before each submit it adds what has been spent
(the host's price of each finished task, else its estimate), what is in flight (estimated) and
this request's estimate; if that passes the cap the request is not sent. A host that charges more
than the estimate raises the price the rest of the batch is estimated at.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._exceptions import ValidationError

if TYPE_CHECKING:
    from .._contract import GenerationRequest
    from ..journal._store import JobRecord, Store
    from ..providers._base import Provider

__all__ = ["Budget", "Estimate", "Price", "check_max_cost", "estimate_requests", "money", "price_of"]

_JOURNAL_DEPTH = 500  # newest journal entries searched for a price


def money(amount: float) -> str:
    """$0.006, $0.144, $0.10, $12.50: enough digits for a price per image, no more."""
    if not amount:
        return "$0"
    if amount >= 1:
        return f"${amount:,.2f}"
    whole, _, cents = f"{amount:.4f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@dataclass(frozen=True)
class Price:
    """One request's estimate: per image, times its images; where the price came from."""

    request: GenerationRequest
    per_image: float | None
    source: str  # "journal", "price table", "cache" (free), or "unknown"
    seen: float | None = None  # when the journal saw that price

    @property
    def cost(self) -> float | None:
        if self.source == "cache":
            return 0.0
        return None if self.per_image is None else self.per_image * self.request.n


@dataclass(frozen=True)
class Estimate:
    """What a list of requests should cost, before anything is sent (``client.estimate``)."""

    prices: tuple[Price, ...]
    host: str
    table_date: str = ""

    @property
    def generations(self) -> int:
        return len(self.prices)

    @property
    def images(self) -> int:
        return sum(p.request.n for p in self.prices)

    @property
    def cached(self) -> int:
        """Requests the journal serves (no request sent, nothing billed)."""
        return sum(1 for p in self.prices if p.source == "cache")

    @property
    def unpriced(self) -> list[Price]:
        return [p for p in self.prices if p.cost is None]

    @property
    def cost(self) -> float | None:
        """The total, or None when any request has no known price."""
        if self.unpriced:
            return None
        return sum(p.cost or 0.0 for p in self.prices)

    def known_cost(self) -> float:
        return sum(p.cost or 0.0 for p in self.prices)

    def basis(self) -> str:
        """Where the prices come from, in a few words."""
        said = []
        journal = [p for p in self.prices if p.source == "journal"]
        if journal:
            newest = max(p.seen or 0 for p in journal)
            said.append(f"the journal's last price on {self.host} (seen {time.strftime('%Y-%m-%d', time.localtime(newest))})")
        if any(p.source == "price table" for p in self.prices):
            said.append(f"{self.host}'s price table: {self.table_date}" if self.table_date else f"{self.host}'s price table")
        if self.cached:
            said.append(f"{self.cached} from the journal at no cost")
        return "; ".join(said)

    def missing(self) -> str:
        """The unpriced requests' model and resolution, once each."""
        seen = dict.fromkeys(f"{p.request.model} {p.request.resolution}" for p in self.unpriced)
        return ", ".join(seen)

    def __str__(self) -> str:
        head = (
            f"{self.generations} generation{'s' if self.generations != 1 else ''}, "
            f"{self.images} image{'s' if self.images != 1 else ''}"
        )
        if self.cost is not None:
            amount = f"about {money(self.cost)}"
        elif len(self.unpriced) == self.generations:
            amount = f"cost unknown (no price seen for {self.missing()} on {self.host})"
        else:
            amount = (
                f"at least {money(self.known_cost())} (no price seen for {self.missing()} on {self.host}: "
                f"{len(self.unpriced)} not counted)"
            )
        basis = self.basis()
        return f"{head}, {amount}" + (f" ({basis})" if basis else "")

    def __repr__(self) -> str:
        return f"<Estimate {self}>"

    def refusal(self, max_cost: float) -> str | None:
        """Why ``max_cost`` refuses this batch before anything is sent, or None when it fits."""
        if self.unpriced:
            return (
                f"max_cost {money(max_cost)} cannot be kept: no price is known for {self.missing()} on "
                f"{self.host} (none in its price table, none seen in the journal); nothing was sent. "
                "Drop the cap, or make one generation without it so the journal learns the price"
            )
        cost = self.cost or 0.0
        if cost > max_cost + 1e-12:
            return (
                f"the estimate is {money(cost)} for {self.generations} generation{'s' if self.generations != 1 else ''} "
                f"({self.images} images), over max_cost {money(max_cost)}: nothing was sent; raise the cap or send fewer"
            )
        return None


def check_max_cost(max_cost: float | None) -> float | None:
    if max_cost is None:
        return None
    if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or not 0 <= max_cost < float("inf"):
        raise ValidationError("max_cost", f"max_cost must be an amount of money >= 0, e.g. 0.50; got {max_cost!r}")
    return float(max_cost)


def _journal_prices(store: Store, scope: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(model, resolution) -> (price per image, when seen): the newest priced task of this scope."""
    found: dict[tuple[str, str], tuple[float, float]] = {}
    entries: Sequence[JobRecord] = store.history(_JOURNAL_DEPTH)
    for entry in entries:  # newest first: the first price met for a key is the last one seen
        if entry.cost is None or entry.status != "completed" or (entry.scope or entry.origin) != scope:
            continue
        key = (entry.request.model, entry.request.resolution)
        if key not in found and entry.request.n > 0 and entry.request.prompt:
            found[key] = (entry.cost / entry.request.n, entry.completed_at or entry.updated_at)
    return found


# A face that prices as you type (the panel) asks often: the journal is read at most this often.
_RECENT_SECONDS = 5.0
_recent: dict[tuple[str, str], tuple[float, dict[tuple[str, str], tuple[float, float]]]] = {}


def price_of(request: GenerationRequest, *, provider: Provider, store: Store, scope: str) -> Price:
    """One request's price (never from the cache: a face that always makes new images), with the
    journal's prices read at most every few seconds."""
    key = (str(store.root), scope)
    seen, prices = _recent.get(key, (0.0, {}))
    if time.monotonic() - seen > _RECENT_SECONDS:
        prices = _journal_prices(store, scope)
        _recent[key] = (time.monotonic(), prices)
    found = prices.get((request.model, request.resolution))
    if found is not None:
        return Price(request, found[0], "journal", found[1])
    per_image = provider.estimated_price(request)
    return Price(request, per_image, "price table" if per_image is not None else "unknown")


def estimate_requests(
    requests: Sequence[GenerationRequest],
    *,
    provider: Provider,
    store: Store,
    scope: str,
    cached: Sequence[bool],
) -> Estimate:
    """Each request's price (journal, else the price table; nothing for a cache hit), summed."""
    journal = _journal_prices(store, scope)
    prices = []
    for request, hit in zip(requests, cached, strict=True):
        key = (request.model, request.resolution)
        if hit:
            prices.append(Price(request, 0.0, "cache"))
        elif key in journal:
            per_image, seen = journal[key]
            prices.append(Price(request, per_image, "journal", seen))
        elif (per_image := provider.estimated_price(request)) is not None:
            prices.append(Price(request, per_image, "price table"))
        else:
            prices.append(Price(request, None, "unknown"))
    return Estimate(prices=tuple(prices), host=provider.title, table_date=provider.prices_as_of)


class Budget:
    """Keeps a running batch under ``max_cost``: spent + in flight + the next one, before each submit."""

    def __init__(self, estimate: Estimate, max_cost: float) -> None:
        self.estimate = estimate
        self.max_cost = max_cost
        self.spent = 0.0
        self._in_flight: dict[int, float] = {}
        self._settled: set[int] = set()
        self._scale = 1.0  # how far the host's real prices ran over the estimates so far
        self.stopped = 0

    def _expected(self, index: int) -> float:
        return (self.estimate.prices[index].cost or 0.0) * self._scale

    def on_update(self, index: int, update: Any) -> None:
        """A finished task's price counts as soon as the host says it, before its downloads: the
        batch's next slot opens then, and must see what this one really cost."""
        if update.stage in ("completed", "downloading", "done") and update.cost is not None and not update.cached:
            self.settle(index, update.cost, billed=True)

    def reserve(self, index: int) -> str | None:
        """Reserve request ``index``'s estimate, or say (one line) why it is not sent."""
        # No lock: a batch runs on one event loop, and nothing here awaits.
        expected = self._expected(index)
        in_flight = sum(self._in_flight.values())
        if expected and self.spent + in_flight + expected > self.max_cost + 1e-12:
            self.stopped += 1
            return (
                f"not sent: {money(self.spent)} spent + {money(in_flight)} in flight + {money(expected)} for "
                f"this one would pass max_cost {money(self.max_cost)}"
            )
        self._in_flight[index] = expected
        return None

    def settle(self, index: int, cost: float | None, *, billed: bool) -> None:
        """Request ``index`` is over (or the host has priced it): its price (the host's, else the
        estimate) counts as spent, once."""
        if index in self._settled:
            return
        self._settled.add(index)
        expected = self._in_flight.pop(index, 0.0)
        if not billed:
            return
        estimated = self.estimate.prices[index].cost or 0.0
        if cost is not None and estimated > 0 and cost > estimated:
            self._scale = max(self._scale, cost / estimated)
        self.spent += cost if cost is not None else expected

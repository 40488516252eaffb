"""One filter for the trail, shared by the UI page and the API (keyset pagination on seq)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import get_current_timezone, make_aware

from access.people.choices import Role
from audit.models import AuditEvent

PAGE_SIZE = 50


class FilterError(ValueError):
    pass


def parse_when(name: str, value: str, end_of_day: bool = False) -> datetime:
    """A date (with ``end_of_day``: its last instant) or a date and time; naive means the console's
    time zone. Refuses anything else with FilterError naming ``name``."""
    try:
        day = parse_date(value)  # first: parse_datetime also reads a bare date, as midnight
        parsed = None if day else parse_datetime(value)
    except ValueError:  # well-formed but impossible, e.g. 2026-02-30
        raise FilterError(f"{name}: {value!r} is not a real date.") from None
    if parsed is None:
        if day is None:
            raise FilterError(f"{name}: use a date like 2026-11-25 or 2026-11-25T14:00, not {value!r}.")
        parsed = datetime.combine(day, datetime.max.time() if end_of_day else datetime.min.time())
    if parsed.tzinfo is None:
        parsed = make_aware(parsed, get_current_timezone())
    try:  # in UTC: PostgreSQL takes offsets up to 15:59, ISO 8601 up to 23:59
        return parsed.astimezone(UTC)
    except OverflowError:
        raise FilterError(f"{name}: {value!r} is out of range.") from None


@dataclass
class TrailFilter:
    actor: str = ""
    department: str = ""
    role: str = ""
    action: str = ""
    target: str = ""
    q: str = ""
    since: str = ""
    until: str = ""
    before: str = ""  # keyset cursor: show events with seq < before

    @classmethod
    def from_params(cls, params) -> TrailFilter:
        return cls(**{f: params.get(f, "").strip()[:200] for f in cls.__dataclass_fields__})

    def active(self) -> bool:
        return any(getattr(self, f) for f in self.__dataclass_fields__ if f != "before")

    def narrows(self) -> bool:
        """Whether anything but the period (and the page) is set."""
        return any(getattr(self, f) for f in self.__dataclass_fields__ if f not in ("since", "until", "before"))

    def as_dict(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__ if getattr(self, f) and f != "before"}

    def apply(self, qs: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        qs = self.narrow(qs)
        return self.window(qs).order_by("-seq")

    def narrow(self, qs: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        """Everything but the period and the page: who, what, on what (the exports use it too)."""
        if self.role:
            if self.role not in Role.values:
                raise FilterError(f"role: one of {', '.join(Role.values)}, not {self.role!r}.")
            qs = qs.filter(actor_role=self.role)
        if self.actor:
            qs = qs.filter(actor_name=self.actor)  # exact: it uses the (actor_name, seq) index
        if self.department:
            qs = qs.filter(actor_department=self.department)
        if self.action:  # "auth." (ending in a dot) means every auth action; otherwise that action
            qs = (
                qs.filter(action__startswith=self.action)
                if self.action.endswith(".")
                else qs.filter(action=self.action)
            )
        if self.target:
            qs = qs.filter(target_type=self.target)
        if self.q:
            qs = qs.filter(
                Q(actor_name__icontains=self.q)
                | Q(action__icontains=self.q)
                | Q(target_repr__icontains=self.q)
                | Q(request_id=self.q)
            )
        return qs

    def window(self, qs: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
        # every value is checked before any shortcut: a bad cursor is refused even in an empty window
        if self.before and not (self.before.isdigit() and int(self.before) >= 1):
            raise FilterError(f"before: give an event number, not {self.before!r}.")
        since = parse_when("since", self.since) if self.since else None
        until = parse_when("until", self.until, end_of_day=True) if self.until else None
        if self.before:
            qs = qs.filter(seq__lt=int(self.before))
        if since and until and since > until:
            return qs.none()  # an empty window
        if since:
            qs = qs.filter(created_at__gte=since)
        if until:
            qs = qs.filter(created_at__lte=until)
        return qs

    def page(self, user: Any, size: int = PAGE_SIZE) -> tuple[list[AuditEvent], int | None]:
        """One page of what ``user`` may see, newest first, and the cursor for the next (older)
        page, if any."""
        rows = list(self.apply(AuditEvent.objects.visible_to(user))[: size + 1])
        more = len(rows) > size
        rows = rows[:size]
        return rows, (rows[-1].seq if more and rows else None)

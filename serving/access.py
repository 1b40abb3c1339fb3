"""Who may ask the scoring API what: API keys, roles, areas, and the key check (docs/api.md
"Access").

A key is `dk_<key id: 12 hex>_<secret: 64 hex>` (256 random bits). The store keeps its
key id (public: listed, logged, audited) and the SHA-256 of the whole key (a fast hash
suffices for a random secret of that size: there is no password to guess); the key
itself is shown once, at `doudi keys create`. Each key has a role and an area:

| role | area | may call |
|---|---|---|
| `platform` | the whole province | every endpoint |
| `county` | its 6-digit county codes | every endpoint |
| `township` | its 9-digit township codes | every endpoint |
| `analyst` | the whole province | `/score`, `/explain`, `/model` |

Every endpoint: `/score`, `/explain`, `/model`, `/alerts`, `/score_fresh`, `/verdicts`,
`/referrals`.

Areas are enforced on the server: a household whose village lies outside the key's area is
answered exactly as an unknown household. `analyst` reads pseudonymised scores and
reasons (the model's view) but not `/alerts`, the operational record of which household
was dispatched, visited and judged when: events a person can observe in a village, so
the one list that could tie a pseudonym back to a family; nor `/verdicts` and
`/referrals` (they write that record); nor `/score_fresh`, which answers for records the
caller sends: made-up rows would let it test guesses about who a pseudonym is. An
endpoint missing from `ENDPOINT_ROLES` is refused to every role (fail closed: a new
endpoint says who may call it before anyone can).

Everything here is pure (no database, no web framework) except `KeyVerifier`, which
caches what its `load` function (`serving.store.keys.stored_key`) returns.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from doudi.errors import UserError


class Role(StrEnum):
    """What a key is for (docs/api.md "Access")."""

    PLATFORM = "platform"  # the provincial monitoring platform: the whole province
    COUNTY = "county"  # a county office: its county codes
    TOWNSHIP = "township"  # a township's caseworkers: its township codes
    ANALYST = "analyst"  # model and policy analysis: pseudonymised, no operational record


PROVINCE_ROLES = frozenset({Role.PLATFORM, Role.ANALYST})
CODE_DIGITS = {Role.COUNTY: 6, Role.TOWNSHIP: 9}
_ALL = frozenset(Role)
_OPERATIONS = _ALL - {Role.ANALYST}  # the alert store's record and raw records
# Route -> roles that may call it. Not listed: refused to everyone (403).
ENDPOINT_ROLES: Mapping[str, frozenset[Role]] = {
    "/score": _ALL,
    "/explain": _ALL,
    "/model": _ALL,
    "/alerts": _OPERATIONS,
    "/score_fresh": _OPERATIONS,
    "/verdicts": _OPERATIONS,
    "/referrals": _OPERATIONS,
}

# How long a verified key is trusted without asking the store again: a revocation takes
# effect within this many seconds; a cache hit costs one SHA-256 (microseconds).
KEY_CACHE_SECONDS = 5.0
DEFAULT_EXPIRES_DAYS = 90
MAX_EXPIRES_DAYS = 730
MAX_LABEL_CHARS = 200

KEY_PREFIX = "dk_"
KEY_ID_HEX = 12
SECRET_HEX = 64
_TOKEN = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{{KEY_ID_HEX}}})_[0-9a-f]{{{SECRET_HEX}}}$")
_BEARER = re.compile(r"^[Bb]earer +(\S+) *$")


# -- areas -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Area:
    """The households a key sees: the whole province, or villages under its codes."""

    whole: bool = False
    counties: frozenset[str] = frozenset()
    townships: frozenset[str] = frozenset()

    @classmethod
    def province(cls) -> Area:
        return cls(whole=True)

    @classmethod
    def of(cls, codes: Iterable[str]) -> Area:
        """Villages under these 6-digit county and 9-digit township codes (no codes: none)."""
        codes = list(codes)
        return cls(
            counties=frozenset(c for c in codes if len(c) == 6),
            townships=frozenset(c for c in codes if len(c) == 9),
        )

    def covers(self, village_code: str) -> bool:
        """Whether a household of this village (12-digit code) is in the area."""
        if self.whole:
            return True
        code = str(village_code)
        return code[:6] in self.counties or code[:9] in self.townships

    def covers_township(self, township_code: str) -> bool:
        """Whether a whole township (9-digit code) lies in the area."""
        return self.whole or township_code[:6] in self.counties or township_code in self.townships

    @property
    def codes(self) -> tuple[str, ...]:
        """The codes, sorted; () for the whole province."""
        return tuple(sorted(self.counties | self.townships))

    def __str__(self) -> str:
        return "province" if self.whole else ",".join(self.codes) or "(nothing)"


def check_area(role: Role | str, codes: Sequence[str]) -> tuple[str, ...]:
    """The area codes a key of this role may carry, de-duplicated and sorted; UserError
    (one line, naming the rule) otherwise. `platform` and `analyst` take none (the whole
    province); `county` takes 6-digit codes, `township` 9-digit codes, at least one."""
    role = parse_role(role)
    unique = tuple(sorted(dict.fromkeys(str(c).strip() for c in codes)))
    if role in PROVINCE_ROLES:
        if unique:
            raise UserError(f"{_a(role)} key sees the whole province: give no --area")
        return ()
    digits = CODE_DIGITS[role]
    if not unique:
        raise UserError(f"{_a(role)} key needs --area: one or more {digits}-digit {role} codes")
    wrong = [c for c in unique if not (len(c) == digits and c.isdigit())]
    if wrong:
        raise UserError(
            f"--area {wrong[0]!r}: {_a(role)} key's area is {digits}-digit {role} codes"
        )
    return unique


def _a(role: Role) -> str:
    return f"an {role}" if role == Role.ANALYST else f"a {role}"


def parse_role(value: Role | str) -> Role:
    """A role by name; UserError naming the four otherwise."""
    try:
        return Role(value)
    except ValueError:
        raise UserError(
            f"role {value!r} is not one of {', '.join(r.value for r in Role)}"
        ) from None


def allowed(role: Role, endpoint: str) -> bool:
    """Whether `role` may call `endpoint` (a route such as `/score`)."""
    return role in ENDPOINT_ROLES.get(endpoint, frozenset())


# -- keys --------------------------------------------------------------------------------------
def new_key() -> tuple[str, str]:
    """(key id, key): a fresh random key. Only its hash is ever stored."""
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_hex(SECRET_HEX // 2)}"


def key_hash(key: str) -> str:
    """What the store keeps of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The key id inside a well-formed key; None for anything else."""
    found = _TOKEN.match(key)
    return found.group(1) if found else None


def bearer(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header value; None when absent or
    not of that form."""
    if not authorization:
        return None
    found = _BEARER.match(authorization)
    return found.group(1) if found else None


@dataclass(frozen=True)
class StoredKey:
    """What the store holds about a key (never the key itself)."""

    key_id: str
    key_hash: str
    role: str
    area: tuple[str, ...]
    label: str
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Principal:
    """A verified caller: its key id, role and area."""

    key_id: str
    role: Role
    area: Area
    label: str


def principal_of(stored: StoredKey) -> Principal:
    """The caller a stored key stands for. The area follows the role, never the row alone:
    a province role sees the province; a county or township key sees its codes (none:
    nothing), so a damaged row fails closed."""
    role = Role(stored.role)
    area = Area.province() if role in PROVINCE_ROLES else Area.of(
        c for c in stored.area if len(c) == CODE_DIGITS[role]
    )
    return Principal(stored.key_id, role, area, stored.label)


@dataclass
class AuditEntry:
    """One request to an endpoint, filled in as it is answered (`serving.store.keys.AuditLog`
    writes it). Households are well-formed pseudonyms only: never what failed the check."""

    endpoint: str
    at: datetime
    key_id: str | None = None  # a key of the store (refused ones included), else None
    role: str | None = None  # set once the key is verified
    status: int = 0
    refusal: str | None = None  # why a 401 / 403
    asked: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    principal: Principal | None = None


class AuthError(Exception):
    """A request without a usable key (HTTP 401). `reason` is short and logged; `key_id`
    is set only for a key that exists in the store."""

    def __init__(self, reason: str, key_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id

    @property
    def message(self) -> str:
        """What the caller is told: why, for the holder of a real key (expired, revoked);
        nothing that helps a guesser otherwise."""
        if self.reason in ("expired", "revoked"):
            return f"API key {self.reason}: ask the operator for a new one (doudi keys create)"
        return "missing or invalid API key: send Authorization: Bearer <key> (doudi keys create)"


def check_key(stored: StoredKey | None, key: str, now: datetime) -> Principal:
    """The principal for `key` given what the store holds for its id; AuthError otherwise.
    The hash comparison is constant-time."""
    if stored is None:
        raise AuthError("unknown key")
    if not hmac.compare_digest(stored.key_hash, key_hash(key)):
        raise AuthError("wrong secret", stored.key_id)
    if stored.revoked_at is not None:
        raise AuthError("revoked", stored.key_id)
    if stored.expires_at <= now:
        raise AuthError("expired", stored.key_id)
    return principal_of(stored)


@dataclass
class _Cached:
    stored: StoredKey | None
    fetched: float


@dataclass
class KeyVerifier:
    """Checks `Authorization` headers against the store, caching each key id's row for
    `ttl` seconds (a revocation or expiry reaches the server within that time; an unknown
    id is cached too, so a flood of guesses costs the store one query per id and window).

    `cached` answers from memory or says MISS; `verify` may query the store (blocking: the
    service calls it in a thread)."""

    load: Callable[[str], StoredKey | None]
    ttl: float = KEY_CACHE_SECONDS
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    max_entries: int = 10_000
    _cache: dict[str, _Cached] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    MISS = None

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal from the cache; AuthError for a refused key; None (MISS) when the
        store must be asked."""
        key, key_id = self._parse(authorization)
        with self._lock:
            entry = self._cache.get(key_id)
        if entry is None or self.clock() - entry.fetched > self.ttl:
            return self.MISS
        return check_key(entry.stored, key, self.now())

    def verify(self, authorization: str | None) -> Principal:
        """The principal for this header; AuthError (with the reason) otherwise."""
        found = self.cached(authorization)
        if found is not None:
            return found
        key, key_id = self._parse(authorization)
        stored = self.load(key_id)
        with self._lock:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()  # bounded: guesses cannot grow it without end
            self._cache[key_id] = _Cached(stored, self.clock())
        return check_key(stored, key, self.now())

    @staticmethod
    def _parse(authorization: str | None) -> tuple[str, str]:
        if not authorization:
            raise AuthError("no key")
        key = bearer(authorization)
        key_id = key_id_of(key) if key else None
        if key is None or key_id is None:
            raise AuthError("malformed key")
        return key, key_id

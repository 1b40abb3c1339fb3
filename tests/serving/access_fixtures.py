"""API keys for tests that call the real server: made in the workspace's alert store, as
`doudi keys create` makes them (serving.store.keys.create_key)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest

from doudi.settings import Settings
from serving.store import open_store
from serving.store.keys import create_key


def make_key(
    settings: Settings,
    role: str,
    area: Sequence[str] = (),
    *,
    label: str = "tests",
    expires_days: int = 30,
    created: datetime | None = None,
) -> tuple[str, str]:
    """(key id, key) of a new key in `settings`' alert store; `created` backdates it (an
    expired key: created long enough ago)."""
    clock = (lambda: created) if created is not None else None
    store = open_store(settings=settings, **({"clock": clock} if clock else {}))
    try:
        info, key = create_key(store, role=role, area=area, label=label,
                               expires_days=expires_days, created_by="tests")
    finally:
        store.dispose()
    return info.key_id, key


def bearer(key: str) -> dict[str, str]:
    """The request header that carries `key`."""
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def platform_key(settings: Settings) -> str:
    """A platform key (whole province) in the module's workspace; `settings` is the
    using module's workspace fixture."""
    return make_key(settings, "platform", label="tests: platform")[1]

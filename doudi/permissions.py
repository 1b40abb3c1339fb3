"""Who may read the workspace's secrets: checked before any command reads them.

The pseudonym key must be the running user's and 0600 (or 0400); `vault/`,
`quarantine/` and `pending/` must be the running user's and 0700. Anything looser is
refused in one line that says the `chmod` (or `chown`) to run: a key or vault others
could read may already have leaked, and fixing the mode silently would hide that.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from doudi.errors import UserError
from doudi.safe_text import visible


def check_private(path: Path, *, what: str, mode: str) -> None:
    """Refuse (one line, with the command that fixes it) a `path` that another user owns
    or that grants group or others any access. Absent paths pass."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    shown = visible(str(path))
    quoted = shlex.quote(shown)
    if st.st_uid != os.geteuid():
        raise UserError(f"{shown}: {what} belongs to user id {st.st_uid}, not to the user "
                        f"running doudi ({os.geteuid()}); run: chown $(id -un) {quoted}")
    if st.st_mode & 0o077:
        raise UserError(f"{shown}: {what} is open to other users (mode "
                        f"{st.st_mode & 0o777:04o}); run: chmod {mode} {quoted}")


def check_private_dir(path: Path) -> None:
    """A folder holding raw identifiers or rows not yet placed: 0700, the user's own."""
    check_private(path, what="a private folder", mode="700")

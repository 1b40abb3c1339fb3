"""The model registry's conventions, in one place (a ground module: training and serving
both use it; it imports no stage package, and nothing heavy at import).

- **Names.** One registered model per workspace: `doudi-risk-<fingerprint[:8]>`, or
  `Settings.model_name`. Two workspaces sharing one tracking store never share aliases.
  Aliases: `champion` (what scoring and the API use) and `challenger` (the newest version).
- **URIs.** `models:/NAME@ALIAS` and `models:/NAME/VERSION` are parsed here only.
- **The MLflow client.** Telemetry off (before mlflow is first imported), absolute
  tracking URI from `Settings.tracking_uri()`.
- **The workspace binding.** A workspace's fingerprint is HMAC-SHA256(pseudonym key,
  b"doudi-workspace"), 12 hex: it names the workspace without revealing the key. Every
  registered version carries it as the version tag `workspace` and in its artifact's
  `meta.json` (so a model folder passed by path is checked too), plus the county codes it
  was trained on (`counties`, informational). Every load (the training gate's champion,
  score, promote, rollback, the API, the monthly "due" check) checks it: another
  workspace's model, or one without the record (trained before the binding), is refused
  with one line (`UserError`). A model trained on other households' pseudonyms would
  score this workspace's households with features it never saw, for the wrong province.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doudi.errors import UserError
from doudi.permissions import check_private

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from doudi.model_artifact import ModelArtifact
    from doudi.settings import Settings

BASE_NAME = "doudi-risk"
CHAMPION, CHALLENGER = "champion", "challenger"
WORKSPACE_KEY = "workspace"  # version tag and artifact meta key: the workspace fingerprint
COUNTIES_KEY = "counties"  # version tag (comma-joined) and meta key (list): training counties
KEY_BYTES = 32  # the pseudonym key's length (ingest creates it)
FINGERPRINT_HEX = 12
NAME_HEX = 8
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true"}
_FINGERPRINT_MESSAGE = b"doudi-workspace"
log = logging.getLogger(__name__)
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))")


# -- the workspace ------------------------------------------------------------------------
def read_key(key_file: Path) -> bytes | None:
    """The workspace's pseudonym key, or None when the file does not exist (yet)."""
    if not key_file.exists():
        return None
    check_private(key_file, what="the pseudonym key", mode="600")
    key = key_file.read_bytes()
    if len(key) < KEY_BYTES:
        raise UserError(f"{key_file}: pseudonym key is shorter than {KEY_BYTES} bytes")
    return key


def fingerprint_of(key: bytes) -> str:
    """The workspace fingerprint: 12 hex of HMAC-SHA256(key, b"doudi-workspace")."""
    return hmac.digest(key, _FINGERPRINT_MESSAGE, "sha256").hex()[:FINGERPRINT_HEX]


def default_model_name(fingerprint: str) -> str:
    return f"{BASE_NAME}-{fingerprint[:NAME_HEX]}"


@dataclass(frozen=True)
class Workspace:
    """Who a model belongs to: the fingerprint, and the registered model name it uses."""

    fingerprint: str
    model_name: str

    @classmethod
    def from_key(cls, key: bytes, model_name: str | None = None) -> Workspace:
        fp = fingerprint_of(key)
        return cls(fp, model_name or default_model_name(fp))

    @property
    def short(self) -> str:
        return self.fingerprint[:NAME_HEX]

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.model_name}@{CHAMPION}"


def workspace(settings: Settings) -> Workspace:
    """This workspace's binding, from its pseudonym key (created by `doudi ingest`)."""
    key = read_key(settings.key_file)
    if key is None:
        raise UserError(
            f"no pseudonym key at {settings.key_file}: this workspace ({settings.home}) has "
            "no data yet, and its models are bound to that key; run `doudi ingest` first"
        )
    return Workspace.from_key(key, settings.model_name)


def served_uri(settings: Settings) -> str:
    """What the API serves: `Settings.api_model_uri`, else this workspace's champion."""
    return settings.api_model_uri or workspace(settings).champion_uri


def stamp(meta: dict[str, Any], ws: Workspace, counties: Iterable[str] = ()) -> None:
    """Record the workspace (and training counties) in an artifact's meta, in place."""
    meta[WORKSPACE_KEY] = ws.fingerprint
    meta[COUNTIES_KEY] = sorted({str(c) for c in counties})


def version_tags(ws: Workspace, counties: Iterable[str] = ()) -> dict[str, str]:
    """The binding as registry version tags."""
    return {WORKSPACE_KEY: ws.fingerprint,
            COUNTIES_KEY: ",".join(sorted({str(c) for c in counties}))[:4900]}


def _check(recorded: object, label: str, ws: Workspace) -> None:
    if not recorded:
        raise UserError(
            f"model {label} has no workspace record (trained before models were bound to "
            f"workspaces): retrain it in this workspace ({ws.short}…) with `doudi train`; "
            "this workspace's own models: doudi models list"
        )
    if str(recorded) != ws.fingerprint:
        raise UserError(
            f"model {label} belongs to workspace {str(recorded)[:NAME_HEX]}…, not this one "
            f"({ws.short}…); use this workspace's own models (doudi models list)"
        )


def check_version(mv: ModelVersion, ws: Workspace) -> None:
    """Refuse a registered version that is not this workspace's (one-line UserError)."""
    _check((mv.tags or {}).get(WORKSPACE_KEY), f"{mv.name}/{mv.version}", ws)


def check_meta(meta: Mapping[str, Any], ws: Workspace, label: str) -> None:
    """Refuse an artifact (its `meta.json`) that is not this workspace's."""
    _check(meta.get(WORKSPACE_KEY), label, ws)


# -- URIs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION`."""

    name: str
    alias: str | None = None
    version: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else \
            f"models:/{self.name}/{self.version}"


def parse_uri(uri: str) -> ModelRef | None:
    """The registry reference in `uri`; None for anything else (a model folder)."""
    if not uri.startswith("models:/"):
        return None
    found = _URI.fullmatch(uri)
    if found is None or (found["version"] is not None and not found["version"].isdigit()):
        raise UserError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION "
                        "(VERSION a number)")
    return ModelRef(found["name"], found["alias"], found["version"])


# -- the client -------------------------------------------------------------------------------
def disable_telemetry() -> None:
    """MLflow >= 3.2 reports usage unless told not to; it reads this when first imported."""
    os.environ.update(TELEMETRY_OFF)


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An MlflowClient on `tracking_uri` (default: `Settings().tracking_uri()`), also made
    MLflow's global URI (`models:/` downloads use that one)."""
    disable_telemetry()
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri is None:
        from doudi.settings import get_settings

        tracking_uri = get_settings().tracking_uri()
    ensure_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# -- the store's schema ----------------------------------------------------------------------
# MLflow creates a SQLite store's ~30 tables lazily, without a lock and without a transaction
# (SQLite DDL autocommits): two first runs at once raced ("table scorers already exists" on
# every later run), and a kill -9 in the middle left a store no later run could open. So a
# SQLite store is created here, whole, before MLflow opens it: in a temp file beside it,
# under a lock beside it (the store may be shared by workspaces), renamed into place.
_READY: set[Path] = set()  # stores this process has seen complete
_DATA_TABLES = ("runs", "registered_models", "model_versions")


def sqlite_store_path(tracking_uri: str) -> Path | None:
    """The file of a `sqlite:///` tracking URI; None for other stores and `:memory:`."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).resolve()


def _store_state(path: Path) -> tuple[str, str]:
    """("missing" | "complete" | "partial", detail) of a SQLite MLflow store."""
    import sqlite3

    # importing mlflow's db utils registers every table of the schema in Base.metadata
    from mlflow.store.db.utils import Base, _get_latest_schema_revision

    if not path.exists():
        return "missing", ""
    expected = set(Base.metadata.tables)
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}
            revision = db.execute("SELECT version_num FROM alembic_version").fetchone() \
                if "alembic_version" in tables else None
    except sqlite3.DatabaseError as err:
        return "partial", f"not a readable SQLite database ({err})"
    missing = sorted(expected - tables)
    head = _get_latest_schema_revision()
    if not missing and revision is not None and revision[0] == head:
        return "complete", ""
    have = len(expected & tables)
    return "partial", (f"{have} of {len(expected)} tables, schema revision "
                       f"{revision[0] if revision else 'none'} (expected {head})")


def _holds_data(path: Path) -> bool:
    """Does a (possibly half-created) store hold runs, models or experiments of its own?"""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                           "WHERE type = 'table'")}
        counts = [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in _DATA_TABLES if t in tables]
        if "experiments" in tables:  # experiment 0, "Default", is MLflow's own
            counts.append(db.execute(
                "SELECT COUNT(*) FROM experiments WHERE experiment_id != 0").fetchone()[0])
    return any(counts)


def ensure_store(tracking_uri: str) -> None:
    """Make sure a SQLite tracking store exists with MLflow's whole schema, created once,
    atomically. A half-created store (a run killed while MLflow created it, or two first
    runs racing before this existed) that holds no runs, models or experiments is moved
    aside (`<name>.broken-<time>`) and created anew; one holding data is refused in one
    line (docs/operations.md "After a crash"). Other stores (PostgreSQL, ...): MLflow's."""
    path = sqlite_store_path(tracking_uri)
    if path is None or path in _READY:
        return
    disable_telemetry()
    if _store_state(path)[0] == "complete":
        _READY.add(path)
        return
    import fcntl
    import time

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.init.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the other initialiser finishes in seconds: wait
        state, detail = _store_state(path)  # again, under the lock: someone may have made it
        if state == "partial":
            if _holds_data(path):
                raise UserError(
                    f"MLflow store {path} is half-initialised ({detail}) and holds runs or "
                    "models: back it up, then run `mlflow db upgrade sqlite:///"
                    f"{path}`, or move it aside and retrain (docs/operations.md "
                    "\"After a crash\")")
            aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
            path.replace(aside)
            logging.getLogger(__name__).warning(
                "MLflow store %s was half-initialised (%s) and empty: moved to %s and "
                "created anew", path, detail, aside.name)
        if state != "complete":
            _create_store(path)
        _READY.add(path)
    finally:
        os.close(fd)


def _create_store(path: Path) -> None:
    """MLflow's tables in a temp file beside `path`, then renamed onto it (atomic)."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    tmp = path.with_name(f".{path.name}.init-{os.getpid()}.tmp")
    for leftover in path.parent.glob(f".{path.name}.init-*.tmp*"):
        leftover.unlink()  # a killed initialiser's (we hold the init lock)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- lookups ------------------------------------------------------------------------------------
# MLflow's answers meaning "no such model, version or alias" (anything else: no answer)
_NOT_THERE = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


class RegistryUnreachableError(UserError):
    """The registry gave no answer (down, refused, timed out): not "there is no model"."""


def resolve(mlflow_client: MlflowClient, ref: ModelRef, ws: Workspace) -> ModelVersion:
    """The version `ref` points at, checked to be this workspace's."""
    from mlflow.exceptions import MlflowException

    try:
        if ref.alias:
            mv = mlflow_client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            mv = mlflow_client.get_model_version(ref.name, str(ref.version))
    except MlflowException as err:
        if err.error_code not in _NOT_THERE:  # the registry did not answer the question
            raise RegistryUnreachableError(
                f"cannot reach the model registry at {mlflow_client.tracking_uri} "
                f"({err.error_code}): check DOUDI_MLFLOW_TRACKING_URI and that the "
                "tracking server or database is up") from err
        raise UserError(
            f"no model at {ref.uri} in {mlflow_client.tracking_uri}: train one first "
            "(`doudi monthly` or `doudi train`), or pass another model "
            "(doudi models list)") from err
    check_version(mv, ws)
    return mv


def known_versions(mlflow_client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model `name`, oldest first (none when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    return sorted(found, key=lambda v: int(v.version))


def version(mlflow_client: MlflowClient, ws: Workspace, number: str | int) -> ModelVersion:
    """An operator's `VERSION` (a number, or `models:/NAME/N`) of this workspace's model."""
    text = str(number).strip()
    ref = parse_uri(text) if text.startswith("models:/") else None
    if ref is not None:
        if ref.alias:
            raise UserError(f"{text}: give a version, not an alias (models:/NAME/N or N)")
        mv = resolve(mlflow_client, ref, ws)
        if mv.name != ws.model_name:
            raise UserError(f"{text}: this workspace's registered model is {ws.model_name}; "
                            "give one of its versions (doudi models list)")
        return mv
    if not text.isdigit():
        raise UserError(f"{text!r} is not a version number: give the number shown by "
                        "`doudi models list` (e.g. 3)")
    known = known_versions(mlflow_client, ws.model_name)
    match = [v for v in known if str(v.version) == str(int(text))]
    if not match:
        listed = ", ".join(str(v.version) for v in known) or "none yet: train one (doudi train)"
        raise UserError(f"{ws.model_name} has no version {text} (known: {listed})")
    check_version(match[0], ws)
    return match[0]


@dataclass(frozen=True)
class Champion:
    version: str
    as_of: str | None


def champion(mlflow_client: MlflowClient, ws: Workspace) -> ModelVersion | None:
    """This workspace's champion version (checked), or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow_client.get_model_version_by_alias(ws.model_name, CHAMPION)
    except MlflowException:  # no registered model, or no champion alias yet
        return None
    check_version(mv, ws)
    return mv


def find_champion(settings: Settings) -> Champion | None:
    """The champion's version and training as-of month (tags), or None without one."""
    mv = champion(client(settings.tracking_uri()), workspace(settings))
    return None if mv is None else Champion(str(mv.version), mv.tags.get("as_of"))


def locate(uri: str, settings: Settings, *, what: str = "--model") -> ModelVersion | None:
    """Check, before anything is loaded, that `uri` names a model of this workspace: a
    registry URI resolves to its version (returned), a model folder exists and its
    meta.json carries this workspace's record (None). One-line UserError otherwise;
    `what` names where the URI came from."""
    ref = parse_uri(uri)
    if ref is None and not Path(uri).is_dir():
        raise UserError(f"{what} {uri}: no such model folder")
    ws = workspace(settings)
    if ref is None:
        check_folder(Path(uri), ws)
        return None
    return resolve(client(settings.tracking_uri()), ref, ws)


def load_model(uri: str, settings: Settings) -> tuple[ModelArtifact, str | None]:
    """The artifact at `uri` (registry URI or model folder), checked to be this
    workspace's, and its registry label `<name>/<version>` (None for a folder)."""
    from doudi.model_artifact import load_artifact

    mv = locate(uri, settings)
    ws = workspace(settings)
    if mv is None:
        artifact = load_artifact(uri)
        check_meta(artifact.meta, ws, uri)
        return artifact, None
    label = f"{mv.name}/{mv.version}"
    artifact = load_version(mv.name, mv.version)
    check_meta(artifact.meta, ws, label)
    return artifact, label


def load_version(name: str, version: str | int) -> ModelArtifact:
    """Registered version `name`/`version`'s artifact, downloaded and loaded. No workspace
    check here: `load_model` is the checked path."""
    from doudi.model_artifact import load_artifact

    return load_artifact(download(ModelRef(name, version=str(version)).uri))


def download(uri: str) -> Path:
    """A registry or run URI's artifact folder, downloaded to a local directory."""
    disable_telemetry()
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(artifact_uri=uri))
    # A registered version's source is the run's artifact folder holding the "model" dir.
    if not (local / "model.lgb").is_file() and (local / "model" / "model.lgb").is_file():
        local = local / "model"
    return local


# -- the served model's local copy -----------------------------------------------------------
SERVED_COPY = "served-model"  # under Settings.cache_dir


@dataclass(frozen=True)
class Served:
    """The model the API serves: its artifact, registry label, and where it came from:
    `None` when loaded from the registry now, else why the local copy stands in."""

    artifact: ModelArtifact
    label: str | None
    fallback: str | None = None


def load_served(uri: str, settings: Settings) -> Served:
    """`load_model(uri)`, keeping a copy of what it loaded in <home>/cache/served-model/;
    when the registry cannot be reached, the last copy instead (still checked to be this
    workspace's). A refusal (another workspace's model, no champion) is not an outage: it
    raises as before, and so does an outage with no copy yet."""
    from doudi.model_artifact import load_artifact

    copy = settings.cache_dir / SERVED_COPY
    try:
        mv = locate(uri, settings, what="the served model")
        folder = Path(uri) if mv is None else download(
            ModelRef(mv.name, version=str(mv.version)).uri)
        label = None if mv is None else f"{mv.name}/{mv.version}"
    except RegistryUnreachableError as err:
        return _served_copy(copy, settings, err)
    except UserError:
        raise
    except Exception as err:  # the registry's outage: a connection, a locked or lost store
        return _served_copy(copy, settings, err)
    artifact = load_artifact(folder)
    check_meta(artifact.meta, workspace(settings), label or uri)
    _keep_copy(folder, copy, uri, label)
    return Served(artifact, label)


def _served_copy(copy: Path, settings: Settings, outage: Exception) -> Served:
    """The last kept copy, or `outage` raised again when there is none."""
    from doudi.model_artifact import load_artifact

    saved = copy / "served.json"
    if not saved.is_file():
        raise outage
    record = json.loads(saved.read_text(encoding="utf-8"))
    artifact = load_artifact(copy / "model")
    check_meta(artifact.meta, workspace(settings), str(copy))
    why = (f"registry unreachable ({type(outage).__name__}): serving the local copy of "
           f"{record.get('label') or record.get('uri')} saved {record.get('saved_at')}")
    log.warning("%s", why)
    return Served(artifact, record.get("label"), why)


def _keep_copy(folder: Path, copy: Path, uri: str, label: str | None) -> None:
    """`folder` to `copy`/model with a served.json, replacing the last copy whole."""
    import shutil
    import tempfile
    from datetime import UTC, datetime

    record = copy / "served.json"
    if record.is_file() and json.loads(record.read_text(encoding="utf-8")).get("label") == label \
            and label is not None:
        return  # the same registered version: already kept
    copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=copy.parent, prefix=f".{copy.name}."))
    try:
        shutil.copytree(folder, staging / "model")
        (staging / "served.json").write_text(json.dumps({
            "uri": uri, "label": label,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}), encoding="utf-8")
        old = copy.with_name(f".{copy.name}.old.{os.getpid()}")
        if copy.exists():
            copy.rename(old)
        staging.rename(copy)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_folder(path: Path, ws: Workspace) -> None:
    """A model folder's binding, from its meta.json alone (no LightGBM load)."""
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise UserError(f"{path} is not a model folder (no meta.json)")
    check_meta(json.loads(meta_file.read_text(encoding="utf-8")), ws, str(path))


# -- the operators' list ---------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionRow:
    """One line of `doudi models list`."""

    name: str
    version: str
    as_of: str | None
    trained_from: str | None
    trained_through: str | None
    roc_auc: float | None
    pr_auc: float | None
    precision_at_k: float | None
    aliases: tuple[str, ...]
    workspace: str  # "ours", "other" or "none" (no record: trained before the binding)
    created: str


def _float(tags: Mapping[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def version_rows(mlflow_client: MlflowClient, ws: Workspace, *,
                 every_workspace: bool = False) -> list[VersionRow]:
    """This workspace's versions (or every `doudi-risk*` model's), newest first."""
    from datetime import UTC, datetime

    names = [ws.model_name]
    if every_workspace:
        found = {m.name for m in mlflow_client.search_registered_models()}
        names = sorted(n for n in found if n.startswith(BASE_NAME)) or names
    rows = []
    for name in names:
        versions = known_versions(mlflow_client, name)
        if not versions:
            continue
        # search results carry no aliases: the registered model has them
        aliases: dict[str, list[str]] = {}
        for alias, number in (mlflow_client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(str(number), []).append(alias)
        for mv in versions:
            tags = mv.tags or {}
            recorded = tags.get(WORKSPACE_KEY)
            owner = "none" if not recorded else "ours" if recorded == ws.fingerprint else "other"
            created = datetime.fromtimestamp((mv.creation_timestamp or 0) / 1000, UTC)
            rows.append(VersionRow(
                name=mv.name, version=str(mv.version), as_of=tags.get("as_of"),
                trained_from=tags.get("trained_from"), trained_through=tags.get("trained_through"),
                roc_auc=_float(tags, "test_roc_auc"), pr_auc=_float(tags, "test_pr_auc"),
                precision_at_k=_float(tags, "test_precision_at_k"),
                aliases=tuple(sorted(aliases.get(str(mv.version), ()))), workspace=owner,
                created=created.strftime("%Y-%m-%d %H:%M UTC")))
    return sorted(rows, key=lambda r: (r.name != ws.model_name, r.name, -int(r.version)))

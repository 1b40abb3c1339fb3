"""The trained-model artifact: format, loading and prediction (shared by training and serving).

An artifact is a plain directory, no pickle anywhere:

    model.lgb              LightGBM text model (binary risk score, raw margin output)
    calibrator.json        {"method": "isotonic_logit", "x": [...], "z": [...],
                           "slope_low": ..., "slope_high": ...} or
                           {"method": "platt", "a": ..., "b": ...} or {"method": "identity"};
                           legacy {"method": "isotonic", "x": [...], "y": [...]} still loads
    features.json          ordered features: name, kind (numeric|categorical), dtype, levels
    meta.json              schema version, feature registry version, training as-of,
                           trained-through period, metrics summary, risk types, the
                           workspace fingerprint and training counties (`workspace`,
                           `counties`: doudi/registry.py checks them on every load), ...
    types/<risk_type>.lgb  optional per-hardship-type models (probability of each type
                           given the household is identified)
    signature.json, input_example.json   optional, written by training for MLflow readers

Loading a local directory needs only lightgbm, numpy and json. Calibration works on the raw
margin (log-odds) so isotonic thresholds and Platt coefficients are both margin-based.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightgbm as lgb
import numpy as np

if TYPE_CHECKING:
    import pandas as pd

ARTIFACT_SCHEMA_VERSION = 1
FeatureKind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class FeatureSpec:
    """One model input. Categorical values are encoded as their index in `levels`."""

    name: str
    kind: FeatureKind
    dtype: str = "float64"
    levels: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "dtype": self.dtype,
                "levels": list(self.levels)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> FeatureSpec:
        return cls(name=str(d["name"]), kind=d["kind"], dtype=str(d.get("dtype", "")),
                   levels=tuple(str(v) for v in d.get("levels", ())))


CalibrationMethodName = Literal["isotonic_logit", "platt", "identity", "isotonic"]


@dataclass(frozen=True)
class Calibrator:
    """Maps a raw margin to a calibrated probability.

    `isotonic_logit`: log-odds interpolated linearly between knots (x = margins, z = log-odds,
    both strictly increasing) and extended linearly beyond them (`slope_low`/`slope_high` > 0),
    then the sigmoid: strictly increasing in the margin and inside (0, 1), so it never ties
    households the margin tells apart. `platt`: sigmoid(a * margin + b), a > 0.
    `isotonic` is the legacy step-linear map (x = margins, y = probabilities, clipped beyond
    the ends): flat between knots and in the tails, so it ties households. Old artifacts
    still load and apply it; training no longer chooses it.
    """

    method: CalibrationMethodName
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0
    z: tuple[float, ...] = ()
    slope_low: float = 1.0
    slope_high: float = 1.0

    def apply(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=np.float64)
        if self.method == "isotonic_logit":
            return _sigmoid(self.log_odds(margin))
        if self.method == "isotonic":
            # np.interp clips beyond the end thresholds, like sklearn's out_of_bounds="clip".
            return np.interp(margin, np.asarray(self.x), np.asarray(self.y))
        if self.method == "platt":
            return _sigmoid(self.a * margin + self.b)
        return _sigmoid(margin)

    def log_odds(self, margin: np.ndarray) -> np.ndarray:
        """The `isotonic_logit` map before the sigmoid (piecewise linear, linear tails)."""
        m = np.asarray(margin, dtype=np.float64)
        x, z = np.asarray(self.x), np.asarray(self.z)
        out = np.interp(m, x, z)
        low, high = m < x[0], m > x[-1]
        out[low] = z[0] + self.slope_low * (m[low] - x[0])
        out[high] = z[-1] + self.slope_high * (m[high] - x[-1])
        return out

    def to_json(self) -> dict[str, Any]:
        if self.method == "isotonic_logit":
            return {"method": "isotonic_logit", "x": list(self.x), "z": list(self.z),
                    "slope_low": self.slope_low, "slope_high": self.slope_high}
        if self.method == "isotonic":
            return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}
        if self.method == "platt":
            return {"method": "platt", "a": self.a, "b": self.b}
        return {"method": "identity"}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Calibrator:
        method = d["method"]
        if method == "isotonic_logit":
            cal = cls("isotonic_logit", x=tuple(map(float, d["x"])), z=tuple(map(float, d["z"])),
                      slope_low=float(d["slope_low"]), slope_high=float(d["slope_high"]))
            cal.check()
            return cal
        if method == "isotonic":
            return cls("isotonic", x=tuple(map(float, d["x"])), y=tuple(map(float, d["y"])))
        if method == "platt":
            return cls("platt", a=float(d["a"]), b=float(d["b"]))
        if method == "identity":
            return cls("identity")
        raise ValueError(f"calibrator.json: unknown method {method!r}")

    def check(self) -> None:
        """Raise ValueError unless an `isotonic_logit` map is strictly increasing."""
        if self.method != "isotonic_logit":
            return
        x, z = np.asarray(self.x), np.asarray(self.z)
        if len(x) < 1 or len(x) != len(z) or not (np.isfinite(x).all() and np.isfinite(z).all()):
            raise ValueError("calibrator.json: isotonic_logit needs equal-length finite x and z")
        if (np.diff(x) <= 0).any() or (np.diff(z) <= 0).any():
            raise ValueError("calibrator.json: isotonic_logit knots must strictly increase")
        if not (self.slope_low > 0 and self.slope_high > 0):
            raise ValueError("calibrator.json: isotonic_logit tail slopes must be positive")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


def encode_frame(frame: pd.DataFrame, features: Sequence[FeatureSpec]) -> np.ndarray:
    """The float matrix LightGBM sees: numeric as float, categoricals as level codes.

    Unknown categorical values and missing values become NaN (LightGBM's missing branch).
    """
    missing = [f.name for f in features if f.name not in frame.columns]
    if missing:
        raise ValueError(f"input lacks feature column(s): {', '.join(missing[:10])}")
    out = np.empty((len(frame), len(features)), dtype=np.float64)
    for j, spec in enumerate(features):
        col = frame[spec.name]
        if spec.kind == "categorical":
            codes = categorical_codes(col, spec.levels)
            out[:, j] = np.where(codes < 0, np.nan, codes)
        else:
            out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def category_strings(col: pd.Series) -> pd.Series:
    """Values as pandas strings (missing stays missing): how levels are named and matched."""
    return col.astype("string")


def categorical_codes(col: pd.Series, levels: Sequence[str]) -> np.ndarray:
    """Index of each value in `levels`; -1 for missing or unseen values."""
    import pandas as pd

    return np.asarray(pd.Categorical(category_strings(col), categories=list(levels)).codes)


@dataclass
class ModelArtifact:
    """A calibrated LightGBM risk model plus optional per-risk-type models."""

    booster: lgb.Booster
    features: tuple[FeatureSpec, ...]
    calibrator: Calibrator
    meta: dict[str, Any] = field(default_factory=dict)
    type_boosters: dict[str, lgb.Booster] = field(default_factory=dict)
    extra_json: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    # -- inputs --------------------------------------------------------------
    def encode(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """A DataFrame (any column order) or a 2-D float array in feature order (fast path)."""
        if hasattr(X, "columns"):
            return encode_frame(X, self.features)  # type: ignore[arg-type]
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            raise ValueError(
                f"expected a 2-D array with {len(self.features)} columns in feature order, "
                f"got shape {arr.shape}"
            )
        return arr

    # -- predictions -----------------------------------------------------------
    def raw_margin(self, X: pd.DataFrame | np.ndarray, num_threads: int = 1) -> np.ndarray:
        return np.asarray(
            self.booster.predict(self.encode(X), raw_score=True, num_threads=num_threads)
        )

    def predict_proba(self, X: pd.DataFrame | np.ndarray, num_threads: int = 1) -> np.ndarray:
        """Calibrated probability of identification within the horizon."""
        return self.calibrator.apply(self.raw_margin(X, num_threads=num_threads))

    def contributions(self, X: pd.DataFrame | np.ndarray, num_threads: int = 1) -> np.ndarray:
        """TreeSHAP contributions on the margin scale; last column is the bias.

        Each row sums to `raw_margin` of that row.
        """
        return np.asarray(
            self.booster.predict(self.encode(X), pred_contrib=True, num_threads=num_threads)
        )

    def predict_types(
        self, X: pd.DataFrame | np.ndarray, num_threads: int = 1
    ) -> dict[str, np.ndarray]:
        """Per risk type: probability the household has that hardship type if identified."""
        arr = self.encode(X)
        return {
            name: np.asarray(b.predict(arr, num_threads=num_threads))
            for name, b in sorted(self.type_boosters.items())
        }

    # -- persistence -------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(root / "model.lgb"))
        _write_json(root / "calibrator.json", self.calibrator.to_json())
        _write_json(root / "features.json", [f.to_json() for f in self.features])
        meta = {"schema_version": ARTIFACT_SCHEMA_VERSION, **self.meta,
                "risk_types": sorted(self.type_boosters)}
        _write_json(root / "meta.json", meta)
        if self.type_boosters:
            (root / "types").mkdir(exist_ok=True)
            for name, booster in self.type_boosters.items():
                booster.save_model(str(root / "types" / f"{name}.lgb"))
        for name, payload in self.extra_json.items():
            _write_json(root / name, payload)
        return root


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=1, default=_json_default),
                    encoding="utf-8")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def load_artifact(path: str | Path) -> ModelArtifact:
    """Load an artifact directory (a registry version: `doudi.registry.load_version`)."""
    root = Path(path)
    if not (root / "model.lgb").is_file():
        raise FileNotFoundError(f"{root} is not a model artifact (no model.lgb)")
    meta = json.loads((root / "meta.json").read_text(encoding="utf-8"))
    if int(meta.get("schema_version", 0)) > ARTIFACT_SCHEMA_VERSION:
        raise ValueError(f"{root}: artifact schema {meta['schema_version']} is newer than "
                         f"this code understands ({ARTIFACT_SCHEMA_VERSION})")
    features = tuple(FeatureSpec.from_json(d) for d in
                     json.loads((root / "features.json").read_text(encoding="utf-8")))
    calibrator = Calibrator.from_json(
        json.loads((root / "calibrator.json").read_text(encoding="utf-8")))
    booster = lgb.Booster(model_file=str(root / "model.lgb"))
    if booster.num_feature() != len(features):
        raise ValueError(f"{root}: model.lgb has {booster.num_feature()} features, "
                         f"features.json lists {len(features)}")
    types = {p.stem: lgb.Booster(model_file=str(p))
             for p in sorted((root / "types").glob("*.lgb"))} if (root / "types").is_dir() else {}
    return ModelArtifact(booster=booster, features=features, calibrator=calibrator,
                         meta=meta, type_boosters=types)

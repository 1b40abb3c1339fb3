"""The shared serving fixtures are what their tests assume."""

from __future__ import annotations

from doudi.idnumber import id_problem
from features import FEATURES
from tests.serving.export_world import HOUSEHOLDS
from tests.serving.scoring_fixtures import feature_frame, labels


def test_world_ids_are_valid() -> None:
    assert all(id_problem(v[3]) is None for v in HOUSEHOLDS.values())
    assert len({v[1] for v in HOUSEHOLDS.values()}) == len(HOUSEHOLDS)


def test_fixture_frame_has_every_registry_feature() -> None:
    frame = feature_frame(20)
    assert list(frame.columns[4:]) == [s.name for s in FEATURES]
    assert labels(feature_frame(400)).mean() > 0.02

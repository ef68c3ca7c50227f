"""Site configuration: every example loads; every bad file names the file, the field and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from envs.config import Charger, ConfigError, SiteConfig, dump_site, load_site, site_from_dict

SITES = sorted((Path(__file__).parents[1] / "configs" / "sites").glob("*.yaml"))

GOOD = {
    "name": "t",
    "grid": {"import_limit_kw": 50},
    "nodes": [
        {"id": "root", "max_power_kw": 50},
        {"id": "g1", "parent": "root", "max_power_kw": 30, "max_current_a": 40},
    ],
    "chargers": [
        {"id": "c1", "node": "g1", "phases": 3, "max_current_a": 16},
        {"id": "c2", "node": "g1", "phases": 1, "phase": "L2", "max_current_a": 32},
    ],
}


def _with(path: str, value: object) -> dict[str, object]:
    """GOOD with one entry replaced; ``path`` like ``chargers.1.phase`` (``value=...`` deletes)."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    key: int | str = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return data


def test_example_sites_load() -> None:
    assert len(SITES) >= 3
    for path in SITES:
        site = load_site(path)
        assert site.n_chargers >= 1
        for c in site.chargers:
            assert c.node in {n.id for n in site.nodes}


def test_depot_example_has_tree_single_phase_pv_battery_and_demand_charge() -> None:
    site = load_site(Path(__file__).parents[1] / "configs" / "sites" / "depot_20.yaml")
    assert site.ancestors("group_b2") == ("group_b2", "feeder_b", "transformer")
    phases = {c.phases for c in site.chargers}
    assert phases == {1, 3}
    assert site.pv is not None and site.battery is not None
    assert site.tariff.demand_charge_per_kw > 0


def test_rated_power_is_the_smaller_rating() -> None:
    three = Charger(id="a", node="n", phases=3, max_current_a=16)
    assert three.rated_power_kw == pytest.approx(3 * 230 * 16 / 1000)
    capped = Charger(id="b", node="n", phases=3, max_current_a=32, max_power_kw=11)
    assert capped.rated_power_kw == 11
    single = Charger(id="c", node="n", phases=1, phase="L3", max_current_a=32)
    assert single.min_power_kw == pytest.approx(6 * 230 / 1000)
    assert single.kw_per_a == pytest.approx(0.23)


BAD = [
    ("nodes.1.parent", "nope", "nodes[1] (id 'g1').parent", "unknown parent node 'nope'"),
    ("nodes.0.parent", "g1", "(id 'root').parent", "cycle: root -> g1 -> root"),
    ("chargers.0.node", "attic", "chargers[0] (id 'c1').node", "unknown limit node 'attic'"),
    ("chargers.1.phase", ..., "chargers[1] (id 'c2')", "needs 'phase'"),
    ("chargers.0.phase", "L1", "chargers[0] (id 'c1')", "only for single-phase"),
    ("grid.import_limit_kw", -5, "grid.import_limit_kw", "greater than 0"),
    ("grid.import_limit_kw", "lots", "grid.import_limit_kw", "valid number"),
    ("chargers.0.max_curent_a", 16, "chargers[0] (id 'c1').max_curent_a", "unknown field"),
    ("chargers.0.min_current_a", 20, "chargers[0] (id 'c1')", "minimum current 20.0 A is above"),
    ("chargers.0.max_discharge_kw", 5, "chargers[0] (id 'c1')", "needs bidirectional"),
    ("chargers.1.phases", 2, "chargers[1] (id 'c2').phases", "1 or 3"),
    ("chargers.1.id", "c1", "chargers", "duplicate charger id(s) ['c1']"),
    ("nodes.1.id", "root", "nodes", "duplicate node id(s) ['root']"),
    ("timezone", "Mars/Olympus", "timezone", "unknown IANA time zone"),
    ("grid", ..., "grid", "Field required"),
    ("chargers", [], "chargers", "at least 1 item"),
    ("battery", {"capacity_kwh": 10, "max_charge_kw": 5, "max_discharge_kw": 5, "soc_min": 0.9}, "battery",
     "soc_min must be below soc_max"),
    ("tariff", {"demand_charge_per_kw": -1}, "tariff.demand_charge_per_kw", "greater than or equal to 0"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "value", "field", "why"), BAD, ids=[b[0] + ":" + b[3][:20] for b in BAD])
def test_bad_site_file_names_file_field_and_why(
    tmp_path: Path, path: str, value: object, field: str, why: str
) -> None:
    f = tmp_path / "bad_site.yaml"
    f.write_text(yaml.safe_dump(_with(path, value)))
    with pytest.raises(ConfigError) as info:
        load_site(f)
    message = str(info.value)
    assert message.startswith(f"{f}: ")
    assert field in message
    assert why in message
    assert "\n" not in message


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    data = _with("grid.import_limit_kw", 0)
    data["chargers"][1].pop("phase")  # type: ignore[index]
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"grid.import_limit_kw: .*; chargers\[1\] \(id 'c2'\): "):
        load_site(f)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("grid: [unclosed", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("", "expected a mapping at the top level, got NoneType"),
    ],
)
def test_unparsable_files(tmp_path: Path, text: str, why: str) -> None:
    f = tmp_path / "site.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=why):
        load_site(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere.yaml: cannot read"):
        load_site(tmp_path / "nothere.yaml")


def test_dump_and_load_round_trip_and_frozen(tmp_path: Path) -> None:
    for path in SITES:
        site = load_site(path)
        dump_site(site, tmp_path / "again.yaml")
        assert load_site(tmp_path / "again.yaml") == site
    site = site_from_dict(GOOD)
    with pytest.raises(ValidationError):
        site.name = "other"  # type: ignore[misc]


def test_nested_site_key_is_accepted() -> None:
    assert site_from_dict({"site": GOOD}) == SiteConfig.model_validate(GOOD)

import pytest
import yaml

from spidergan import params
from spidergan.params import ParamsError

from conftest import ROOT


def test_committed_params_load():
    p = params.load(ROOT / "params.yaml")
    assert p.scrape.source == "synthetic"
    assert p.scrape.synthetic.count >= 1


def test_defaults_when_sections_missing():
    p = params.from_dict({})
    assert p.seed == 0 and p.scrape.synthetic.count == 200


@pytest.mark.parametrize("data, key", [
    ({"scrape": {"sorce": "flickr"}}, "scrape.sorce"),
    ({"scrape": {"synthetic": {"cont": 5}}}, "scrape.synthetic.cont"),
    ({"sed": 1}, "sed"),
])
def test_unknown_key_named(data, key):
    with pytest.raises(ParamsError, match=rf"unknown parameter {key}\b"):
        params.from_dict(data)


def test_unknown_key_suggests_close_match():
    with pytest.raises(ParamsError, match="did you mean scrape.synthetic.count"):
        params.from_dict({"scrape": {"synthetic": {"cont": 5}}})


@pytest.mark.parametrize("data, key", [
    ({"scrape": {"synthetic": {"count": 0}}}, "scrape.synthetic.count"),
    ({"scrape": {"synthetic": {"dup_fraction": 0.9}}}, "scrape.synthetic.dup_fraction"),
    ({"seed": -1}, "seed"),
    ({"scrape": {"source": "instagram"}}, "scrape.source"),
])
def test_out_of_range_named(data, key):
    with pytest.raises(ParamsError, match=rf"^{key}"):
        params.from_dict(data)


@pytest.mark.parametrize("data, key", [
    ({"scrape": {"synthetic": {"count": "many"}}}, "scrape.synthetic.count"),
    ({"scrape": {"synthetic": {"count": 2.5}}}, "scrape.synthetic.count"),
    ({"scrape": {"synthetic": {"count": True}}}, "scrape.synthetic.count"),
    ({"scrape": {"min_side": None}}, "scrape.min_side"),
    ({"scrape": "synthetic"}, "scrape"),
    ({"scrape": {"flickr": {"licenses": "all"}}}, "scrape.flickr.licenses"),
    ({"scrape": {"flickr": {"licenses": [1, "x"]}}}, r"scrape.flickr.licenses\[1\]"),
])
def test_wrong_type_named(data, key):
    with pytest.raises(ParamsError, match=rf"^{key}"):
        params.from_dict(data)


def test_cross_field_rule_named():
    with pytest.raises(ParamsError, match=r"^scrape.synthetic.min_size"):
        params.from_dict({"scrape": {"synthetic": {"min_size": 700, "max_size": 640}}})


def test_int_accepted_for_float_and_frozen():
    p = params.from_dict({"scrape": {"synthetic": {"dup_fraction": 0}}})
    assert p.scrape.synthetic.dup_fraction == 0.0 and isinstance(p.scrape.synthetic.dup_fraction, float)
    with pytest.raises(Exception):
        p.seed = 3  # frozen


def test_load_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        params.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scrape: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(bad)


def test_round_trip_to_dict():
    p = params.load(ROOT / "params.yaml")
    again = params.from_dict(yaml.safe_load(yaml.safe_dump(params.to_dict(p))))
    assert again == p


def test_cli_reports_invalid_params(tmp_path, capsys):
    from spidergan import cli

    f = tmp_path / "params.yaml"
    f.write_text("scrape:\n  synthetic:\n    count: -3\n")
    assert cli.main(["--params", str(f), "params"]) == 2
    assert "scrape.synthetic.count" in capsys.readouterr().err


def test_override_applies_dotted_yaml_typed_assignments():
    p = params.load(ROOT / "params.yaml")
    q = params.override(p, ["mask.grabcut.cut=opencv", "mask.grabcut.shadow=[0.5]",
                            "detect.epochs=70", "seed=3"])
    assert q.mask.grabcut.cut == "opencv" and q.mask.grabcut.shadow == (0.5,)
    assert q.detect.epochs == 70 and q.seed == 3
    assert params.override(p, []) == p and p.seed == 0  # the original is left alone


@pytest.mark.parametrize("assignment, message", [
    ("mask.grabcut.cutt=own", r"unknown parameter mask\.grabcut\.cutt"),
    ("mask.grabcut.cut=magic", r"mask\.grabcut\.cut"),
    ("detect.epochs=-1", r"detect\.epochs"),
    ("seed.x=1", r"seed is not a section"),
    ("detect.epochs", r"expected section\.key=value"),
])
def test_override_names_the_bad_key(assignment, message):
    with pytest.raises(ParamsError, match=message):
        params.override(params.from_dict({}), [assignment])


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_leaves(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def test_params_yaml_and_dataclass_defaults_are_one_source():
    """params.yaml names every knob, with the dataclass default as its value: the demo runs what
    a caller of `params.Params()` (tests, bench, library defaults) gets. Change both or neither."""
    raw = _leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))
    defaults = _leaves(params.to_dict(params.Params()))
    assert sorted(set(defaults) - set(raw)) == [], "knobs params.yaml does not list"
    differ = {k: (defaults[k], raw[k]) for k in defaults
              if params.to_dict(params.from_dict(_nest({k: raw[k]}))) != params.to_dict(params.Params())}
    assert differ == {}, "(dataclass default, params.yaml value)"


def _nest(flat: dict) -> dict:
    out: dict = {}
    for key, v in flat.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = v
    return out

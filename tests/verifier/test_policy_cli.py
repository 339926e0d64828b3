"""`gpu-attest-verifier policy list|show|validate` (verifier/policy_cli.py): with and without
--json, every JSON output parsed; no verifier state or configuration is needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.verifier.test_policy_load import MINIMAL
from verifier.cli import main
from verifier.exits import VerifierExit


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _no_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The policy commands must not read a configuration: one that would fail proves it."""
    bad = tmp_path / "verifier.toml"
    bad.write_text("nonsense = true\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("verifier.config.DEFAULT_CONFIG_PATH", bad)


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "list")
    assert code == VerifierExit.OK
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["aidr-2025", "from", "2025-01-13"],
        ["baseline-2025-05", "from", "2025-05-13"],
    ]
    code, out, _ = run(capsys, "policy", "list", "--json", "--config", "/nonexistent.toml")
    assert code == VerifierExit.OK
    assert [(p["id"], p["effective_from"], p["effective_until"]) for p in json.loads(out)] == [
        ("aidr-2025", "2025-01-13", None), ("baseline-2025-05", "2025-05-13", None)]  # fmt: skip


def test_show_json_is_the_whole_pack(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "show", "aidr-2025", "--json")
    assert code == VerifierExit.OK
    pack = json.loads(out)
    assert pack["country_cap"]["tpp"] == 790_000_000
    assert pack["country_cap"]["tpp_with_arrangement"] == 1_580_000_000
    assert pack["country_cap"]["verified"] is False  # secondary source
    assert pack["lpp"]["tpp_per_consignee_per_year"] == 26_900_000 and pack["lpp"]["verified"]
    assert pack["uveu"]["tier2_country_max_share"] == {"fraction": "7/100", "percent": "7%"}
    assert [s["cumulative_tpp"] for s in pack["nveu_allocation"]] == [633_000_000, 5_064_000_000]
    h100 = next(e for e in pack["catalogue"] if e["model"] == "H100-SXM")
    assert h100["pci_device_id"] == "0x233010DE" and h100["dense_tpp"] == 15_832
    assert h100["performance_density"] == {"exact": "7916/407", "approx": "19.45"}
    assert h100["ids"]["verified"] is True and h100["verified"] is False
    assert pack["unknown_model_tpp"] == 60_000
    tiers = {
        x["tier"]: x["countries"] for x in pack["tiers"]["listings"] if x["valid_until"] is None
    }
    assert "MO" in tiers[3] and "US" in tiers[1]
    assert pack["tiers"]["aliases"][0]["country"] == "HK"


def test_show_text_marks_unverified_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "show", "baseline-2025-05")
    assert code == VerifierExit.OK
    assert out.startswith("baseline-2025-05: ")
    assert "[recalled, UNVERIFIED]: 15 CFR part 740 Supp. No. 1" in out
    assert "TPP 15,832 = 1979 dense TOPS x 8 bit; die 814 mm2, PD 19.45 (7916/407)" in out
    assert "country cap" not in out  # the baseline has none


def test_show_unknown_pack_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "policy", "show", "aidr-2099")
    assert code == VerifierExit.REFUSED
    assert "policy-unknown" in err


def test_validate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL, encoding="utf-8")
    code, out, _ = run(capsys, "policy", "validate", str(good))
    assert code == VerifierExit.OK and out.startswith(f"{good}: valid: pack custom-1")
    code, out, _ = run(capsys, "policy", "validate", str(good), "--json")
    assert code == VerifierExit.OK
    assert json.loads(out) == {"file": str(good), "valid": True, "problems": [], "id": "custom-1"}

    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("dense_tpp = 15832", "dense_tpp = 1.5").replace(
        "tpp = 1000", "tpp = nan"), encoding="utf-8")  # fmt: skip
    code, out, _ = run(capsys, "policy", "validate", str(bad))
    assert code == VerifierExit.CONFIG
    assert out.splitlines() == [
        f"{bad}: [country_cap] tpp: must be an integer >= 0, got nan",
        f"{bad}: [catalogue[0]] dense_tpp: must be an integer >= 1, got 1.5",
    ]
    code, out, _ = run(capsys, "policy", "validate", str(bad), "--json")
    assert code == VerifierExit.CONFIG
    report = json.loads(out)
    assert report["valid"] is False and len(report["problems"]) == 2


@pytest.mark.parametrize("name", ["aidr-2025", "baseline-2025-05"])
def test_the_built_in_pack_files_validate(capsys: pytest.CaptureFixture[str], name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "verifier" / "policy" / "packs" / f"{name}.toml"
    code, out, _ = run(capsys, "policy", "validate", str(path))
    assert code == VerifierExit.OK, out

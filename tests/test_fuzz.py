"""The bounded run of the seeded mutation fuzz suite (tests/fuzz.py; `make fuzz` runs it deeper):
every mutated reader input, settings file and model folder ends as "ok" with every record line
counted, or as one clear error, never a traceback, a hang or a silent loss."""

from __future__ import annotations

from tests.fuzz import run


def test_bounded_fuzz_run_has_only_allowed_outcomes(tmp_path) -> None:
    table = run(cases=60, seed=0, tmp=tmp_path)
    findings = table.pop("_findings")
    assert not findings, "\n".join(findings)
    for target, outcomes in table.items():
        assert sum(outcomes.values()) > 0, target
        assert set(outcomes) <= {"ok", "InputError", "ConfigError"}, (target, outcomes)
    # the mutations reach both outcomes (a fuzzer whose mutants all fail, or all pass, tests nothing)
    for fmt in ("zeek", "argus", "nfdump-csv", "csv", "parquet"):
        assert table[fmt]["ok"] > 0 and table[fmt]["InputError"] > 0, (fmt, table[fmt])

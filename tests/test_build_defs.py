"""Definitions built from explicit settings, the environment untouched."""

import os

from governed_ft_dagster.defs.build import build_defs
from governed_ft_dagster.settings import load_settings


def test_two_settings_build_two_code_locations_without_reading_the_environment(monkeypatch):
    monkeypatch.setenv("GOVERNED_FT_FISCAL_YEARS", "1999")
    monkeypatch.setenv("GOVERNED_FT_EDGAR_REFRESH_CRON", "1 1 1 1 1")
    environ = dict(os.environ)
    narrow = build_defs(load_settings({"GOVERNED_FT_FISCAL_YEARS": "2024", "GOVERNED_FT_EDGAR_REFRESH_CRON": "0 5 * * *"}))
    wide = build_defs(load_settings({"GOVERNED_FT_FISCAL_YEARS": "2021-2023",
                                     "GOVERNED_FT_RETRAIN_POLICY": "schedule:0 3 * * 1"}))
    assert dict(os.environ) == environ

    keys = {name: d.get_assets_def("raw_risk_factors").partitions_def.get_partition_keys()
            for name, d in (("narrow", narrow), ("wide", wide))}
    assert keys["narrow"] == ["2024|10-K", "2024|10-Q"]
    assert keys["wide"] == [f"{y}|{f}" for y in (2021, 2022, 2023) for f in ("10-K", "10-Q")]
    schedules = {name: {s.name: s.cron_schedule for s in d.get_repository_def().schedule_defs}
                 for name, d in (("narrow", narrow), ("wide", wide))}
    assert schedules["narrow"] == {"edgar_refresh_schedule": "0 5 * * *"}
    assert schedules["wide"]["edgar_refresh_schedule"] == "0 6 * * *"
    checks = narrow.get_repository_def().asset_checks_defs_by_key
    raw_check = next(c for k, c in checks.items() if k.name == "raw_accessions_unique")
    assert raw_check.partitions_def.get_partition_keys() == keys["narrow"]

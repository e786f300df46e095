"""The EDGAR replay server refuses as SEC does, and the live client stays within fair access against it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from edgar_replay import SHARED_SAMPLES, EdgarReplayServer, FairAccessGate, Universe, declared, max_in_window
from governed_ft_dagster.edgar.client import EdgarClient, EdgarHTTPError

REPO = Path(__file__).resolve().parents[1]
UA = "Governed FT Tests tests@example.com"

pytestmark = pytest.mark.skipif(not (SHARED_SAMPLES / "filings").is_dir(), reason=f"no SEC samples at {SHARED_SAMPLES}")


@pytest.fixture(scope="module")
def universe() -> Universe:
    return Universe(5)


@pytest.fixture
def replay(universe):
    server = EdgarReplayServer(universe, FairAccessGate(lockout_s=1.5)).start()
    yield server
    server.stop()


# --- SEC's rules, by the server's gate ---------------------------------------------------------------------------


@pytest.mark.parametrize("user_agent, ok", [
    ("Sample Company Name AdminContact@example.com", True),
    ("Jane Doe jane.doe@university.edu", True),
    (None, False),
    ("", False),
    ("python-requests/2.32.3", False),
    ("Mozilla/5.0 (X11; Linux x86_64)", False),
    ("admin@example.com", False),  # a contact address but no name
    ("Acme Research", False),  # a name but no contact address
])
def test_a_user_agent_must_declare_a_name_and_a_contact_address(user_agent, ok):
    assert declared(user_agent) is ok


def test_the_eleventh_request_in_a_second_is_refused_and_locks_every_client_out():
    gate = FairAccessGate(lockout_s=5.0)
    for i in range(10):  # two clients, counted together
        assert gate.admit(100.0 + i * 0.09, "/x", UA if i % 2 else "Other Org ops@other.example")[0] == 200
    assert gate.admit(100.85, "/x", UA) == (403, {"Retry-After": "5"})
    assert gate.admit(101.5, "/x", UA) == (403, {"Retry-After": "5"})  # locked out, though under the rate now
    assert gate.admit(105.86, "/x", UA) == (200, {})
    stats = gate.stats()
    assert (stats["requests"], stats["refused"], stats["served"], stats["max_in_window"]) == (13, 2, 11, 11)


def test_the_window_is_one_sliding_second():
    gate = FairAccessGate(lockout_s=5.0)
    for i in range(10):
        assert gate.admit(100.0 + i * 0.1, "/x", UA)[0] == 200
    assert gate.admit(101.0, "/x", UA)[0] == 200  # the request at 100.0 has left the window
    assert gate.admit(101.05, "/x", UA)[0] == 403  # 100.1 ... 101.05: eleven


def test_exceeding_the_rate_during_a_lockout_extends_it_and_429_can_be_served():
    gate = FairAccessGate(lockout_s=2.0, throttle_status=429)
    for i in range(11):
        gate.admit(100.0 + i * 0.01, "/x", UA)
    assert gate.admit(100.5, "/x", UA) == (429, {"Retry-After": "2"})  # still above the rate: 100.5 + 2
    assert gate.admit(102.2, "/x", UA)[0] == 429
    assert gate.admit(102.6, "/x", UA)[0] == 200


def test_undeclared_requests_are_refused_and_counted():
    gate = FairAccessGate()
    assert gate.admit(100.0, "/x", "curl/8.5.0") == (403, {})
    for i in range(9):
        assert gate.admit(100.1 + i * 0.01, "/x", UA)[0] == 200
    assert gate.admit(100.2, "/x", UA)[0] == 403


def test_max_in_window():
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.2]) == 4
    assert max_in_window([]) == 0


# --- the served paths and shapes ---------------------------------------------------------------------------------


def test_serves_edgar_paths_and_shapes(replay, universe):
    session = requests.Session()
    session.headers["User-Agent"] = UA
    tickers = session.get(f"{replay.url}/files/company_tickers.json").json()
    assert tickers["0"] == {"cik_str": 9700001, "ticker": "A", "title": "AGILENT TECHNOLOGIES, INC."}
    assert len(tickers) == 5
    bank = session.get(f"{replay.url}/submissions/CIK0009700001.json")
    assert bank.headers["Content-Type"] == "application/json"
    head = bank.json()
    assert (head["cik"], head["tickers"], head["fiscalYearEnd"]) == ("9700001", ["A"], "1231")
    recent = head["filings"]["recent"]
    assert len({len(column) for column in recent.values()}) == 1 and len(recent["form"]) >= 1000
    [page] = head["filings"]["files"]
    assert page["name"] == "CIK0009700001-submissions-001.json"
    older = session.get(f"{replay.url}/submissions/{page['name']}").json()
    assert len(older["accessionNumber"]) == page["filingCount"]
    assert max(older["filingDate"]) == page["filingTo"] <= min(recent["filingDate"])
    assert "2023-01-01" < page["filingTo"]  # the period's older filings are on the page
    small = session.get(f"{replay.url}/submissions/CIK0009700002.json").json()
    assert small["filings"]["files"] == [] and "10-K" in small["filings"]["recent"]["form"]
    tenk = [i for i, form in enumerate(recent["form"]) if form == "10-K"]
    paths = [f"/Archives/edgar/data/9700001/{recent['accessionNumber'][i].replace('-', '')}/"
             f"{recent['primaryDocument'][i]}" for i in tenk]
    eightk = next(i for i, form in enumerate(recent["form"]) if form == "8-K")
    paths.append(f"/Archives/edgar/data/9700001/{recent['accessionNumber'][eightk].replace('-', '')}/"
                 f"{recent['primaryDocument'][eightk]}")
    documents = [session.get(replay.url + path) for path in (*paths[:2], paths[-1])]
    assert all(d.status_code == 200 and b"<html" in d.content[:3000].lower() for d in documents)
    # The length goes out with the headers, before the copy is rendered: it must be the copy's.
    assert all(int(d.headers["Content-Length"]) == len(d.content) > 0 for d in documents)
    assert documents[0].content != documents[1].content and b"8-K" in documents[2].content
    assert session.get(f"{replay.url}/submissions/CIK0000320193.json").status_code == 404
    assert session.get(f"{replay.url}/Archives/edgar/data/9700001/000970000124000001/nope.htm").status_code == 404
    assert replay.gate.stats()["refused"] == 0


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}


def test_copies_of_one_filing_keep_its_status_but_share_few_shingles(universe):
    from governed_ft_dagster.edgar.extract import extract_risk_factors

    source = next(i for i, d in enumerate(universe.documents) if d.path.name.startswith("NVDA_10-Q"))
    original = extract_risk_factors(universe.documents[source].path.read_bytes(), "10-Q")
    copies = [extract_risk_factors(universe.template(source).render(seed), "10-Q") for seed in (1, 2)]
    assert [c.status for c in copies] == [original.status] * 2 and original.status.value == "extracted"
    a, b = (_shingles(c.text) for c in copies)
    assert len(a & b) / len(a | b) < 0.3  # the curated job's near-duplicate threshold is 0.8


# --- the live client against it -----------------------------------------------------------------------------------

PARTITION_RUN = textwrap.dedent("""
    import json, pathlib, sys, time
    from governed_ft_dagster.edgar.client import EdgarClient
    from governed_ft_dagster.ingest import IngestReport, list_filings
    url, cache, year, form, tickers, ready, go = sys.argv[1:]
    client = EdgarClient(f"Partition {year} {form} ops@example.com", base_url=url, data_url=url, cache_dir=cache)
    pathlib.Path(ready).touch()
    while not pathlib.Path(go).exists():  # all four start together, however long their imports took
        time.sleep(0.005)
    report = IngestReport()
    refs = list_filings(client, tickers.split(","), form, int(year), True, report, lambda message: None)
    client.prefetch(refs)
    documents = [client.download(ref).read_bytes()[:1] for ref in refs]
    print(json.dumps({"accessions": [r.accession_number for r in refs], "rejects": report.rejects,
                      "documents": len(documents)}))
""")


def test_four_partition_runs_in_separate_processes_stay_within_ten_requests_a_second(replay, universe, tmp_path):
    partitions = [(2023, "10-K"), (2023, "10-Q"), (2024, "10-K"), (2024, "10-Q")]
    tickers = ",".join(c.ticker for c in universe.companies)
    go = tmp_path / "go"
    runs = [subprocess.Popen([sys.executable, "-c", PARTITION_RUN, replay.url, str(tmp_path / "edgar_cache"),
                              str(year), form, tickers, str(tmp_path / f"ready-{year}-{form}"), str(go)],
                             cwd=REPO, stdout=subprocess.PIPE, text=True)
            for year, form in partitions]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    outputs = [json.loads(run.communicate(timeout=120)[0]) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0, 0]

    for (year, form), output in zip(partitions, outputs):
        expected = sorted(f.accession for _, f in universe.in_period(form, year))
        assert output["accessions"] == expected and output["documents"] == len(expected)
        assert output["rejects"] == []
    records = replay.gate.records
    stats = replay.gate.stats()
    assert stats["refused"] == 0
    assert stats["max_in_window"] <= 10  # the server's own sliding-second record, all four processes together
    # Each submissions page and the ticker list once for all four runs (the shared cache), each document once.
    paths = [r.path for r in records]
    assert len(paths) == len(set(paths)) == 1 + 5 + 1 + 40
    # The four ran at once: each one's first request came before any one's last.
    spans = {}
    for r in records:
        spans.setdefault(r.user_agent, []).append(r.at)
    assert len(spans) == 4
    assert max(min(times) for times in spans.values()) < min(max(times) for times in spans.values())


def test_a_403_cools_every_client_down_for_retry_after_then_succeeds(replay, tmp_path):
    burst = requests.Session()
    burst.headers["User-Agent"] = "Someone Else else@example.com"
    statuses = [burst.get(f"{replay.url}/files/company_tickers.json").status_code for _ in range(11)]
    assert statuses == [200] * 10 + [403]  # locked out for 1.5 s: Retry-After 2

    options = {"base_url": replay.url, "data_url": replay.url, "cache_dir": tmp_path / "cache", "timeout": 5}
    refused, other = EdgarClient(UA, **options), EdgarClient("Other Desk other@example.com", **options)
    outcomes: dict[str, object] = {}

    def fetch(name: str, client: EdgarClient, path: str) -> None:
        try:
            outcomes[name] = len(client.get(replay.url + path))
        except EdgarHTTPError as exc:
            outcomes[name] = exc

    first = threading.Thread(target=fetch, args=("first", refused, "/submissions/CIK0009700002.json"))
    first.start()
    deadline = time.monotonic() + 10
    while refused.limiter.cooldown_remaining() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    second = threading.Thread(target=fetch, args=("second", other, "/submissions/CIK0009700003.json"))
    second.start()  # another limiter on the same state file, as another process of the deployment would be
    first.join(30)
    second.join(30)
    assert isinstance(outcomes["first"], int) and isinstance(outcomes["second"], int), outcomes

    client_records = [r for r in replay.gate.records if r.user_agent in (UA, "Other Desk other@example.com")]
    assert (client_records[0].user_agent, client_records[0].status) == (UA, 403)
    assert sorted((r.user_agent, r.status) for r in client_records[1:]) == [
        (UA, 200), ("Other Desk other@example.com", 200)]
    refused_at = client_records[0].at
    # Retry-After: 2, honoured by the refused client and by the other one, which waited out the same cool-down.
    assert all(r.at - refused_at >= 2.0 for r in client_records[1:])
    assert all(r.at - refused_at < 10.0 for r in client_records[1:])  # not the 30 s used without Retry-After


def test_a_throttled_client_gives_up_with_a_sentence_naming_the_rule(replay, tmp_path):
    client = EdgarClient(UA, base_url=replay.url, data_url=replay.url, cache_dir=tmp_path / "cache",
                         max_retries=0)
    refused = requests.Session()
    refused.headers["User-Agent"] = UA
    for _ in range(11):
        refused.get(f"{replay.url}/files/company_tickers.json")
    with pytest.raises(EdgarHTTPError) as info:
        client.get(f"{replay.url}/submissions/CIK0009700002.json")
    assert info.value.status == 403
    assert "above 10 requests/s or without a declared User-Agent" in str(info.value)


def test_submissions_pages_are_shared_between_runs_while_fresh(replay, tmp_path):
    import os

    def client() -> EdgarClient:
        return EdgarClient(UA, base_url=replay.url, data_url=replay.url, cache_dir=tmp_path / "cache",
                           submissions_max_age=60)

    client().filings("9700002")
    client().filings("9700002")  # another run within the max age: served from the state folder
    page = tmp_path / "cache" / "submissions" / "CIK0009700002.json"
    os.utime(page, (time.time() - 120, time.time() - 120))
    client().filings("9700002")  # older than the max age: fetched again
    assert [r.path for r in replay.gate.records] == ["/submissions/CIK0009700002.json"] * 2


# --- nothing lost: a filing whose document cannot be kept fails the run by name ------------------------------------


def test_a_document_the_cache_cannot_keep_fails_the_run_by_name_and_the_check_sees_a_lost_row(
        replay, universe, tmp_path, monkeypatch):
    import dagster as dg
    from deltalake import DeltaTable

    from aws_fixtures import BUCKET, start_world
    from conftest import free_port
    from governed_ft_dagster.defs.assets.raw import raw_risk_factors_asset
    from governed_ft_dagster.defs.checks import raw_checks
    from governed_ft_dagster.defs.partitions import raw_partitions
    from governed_ft_dagster.defs.resources.edgar import EdgarResource
    from governed_ft_dagster.edgar.client import archive_path

    asset = raw_risk_factors_asset(raw_partitions((2023, 2024)))
    filings = universe.in_period("10-K", 2024)
    listed = sorted(f.accession for _, f in filings)
    company, lost = filings[1]
    cache = tmp_path / "cache"
    # A file where the filing's cache folder goes: the OS refuses the write, as a full disk refuses it (ENOSPC).
    blocked = (cache / archive_path(company.cik, lost.accession, lost.document)).parent
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a folder")
    edgar = EdgarResource(source="live", user_agent=UA, base_url=replay.url, data_url=replay.url, cache_dir=str(cache),
                          local_root=str(tmp_path / "unused"))
    world, moto = start_world(monkeypatch, free_port())
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"raw_risk_factors": {"config": {"universe": ",".join(c.ticker for c in universe.companies)}}}}
    run = lambda selection=None: dg.materialize(  # noqa: E731
        [asset, *raw_checks(asset.partitions_def)], partition_key="2024|10-K", instance=instance, run_config=config,
        resources={"catalog": world.catalog_resource(), "edgar": edgar}, raise_on_error=False,
        selection=selection)
    options = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": world.moto_url, "AWS_ALLOW_HTTP": "true"}
    table = lambda: DeltaTable(f"s3://{BUCKET}/raw/tables/risk_factors", storage_options=options)  # noqa: E731
    try:
        failed = run()
        assert not failed.success
        (failure,) = failed.get_step_failure_events()
        message = failure.event_specific_data.error.message
        assert f"1 of the {len(listed)} filings listed for 2024|10-K has no row in " in message
        assert f"{lost.accession} (download failed: " in message and "run the partition again" in message
        assert sorted(r["accession_number"] for r in table().to_pyarrow_table().to_pylist()) == sorted(
            set(listed) - {lost.accession})  # the others are kept

        blocked.unlink()
        again = run()
        assert again.success
        metadata = again.asset_materializations_for_node("raw_risk_factors")[0].metadata
        assert metadata["listed_accessions"].value == listed and metadata["rows"].value == len(listed)
        checks = {e.check_name: e for e in again.get_asset_check_evaluations()}
        assert checks["raw_rows_cover_listing"].passed
        documents = [r.path for r in replay.gate.records if r.path.startswith("/Archives/")]
        assert len(documents) == len(listed) + 1  # only the document that was not kept is fetched again

        table().delete(f"accession_number = '{lost.accession}'")  # a row lost after a run that succeeded
        cover = next(c for c in raw_checks(asset.partitions_def) if c.check_key.name == "raw_rows_cover_listing")
        key = dg.MultiPartitionKey({"fiscal_year": "2024", "form_type": "10-K"})
        with dg.build_op_context(instance=instance, partition_key=key,
                                 resources={"catalog": world.catalog_resource()}) as context:
            evaluation = cover(context)
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.description == f"2024|10-K: 1 of {len(listed)} listed filings have no row: {lost.accession}"
    finally:
        world.databricks.stop()
        moto.stop()

"""The fair-access limiter shared through the state folder: pace, window, cool-down, across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from governed_ft_dagster.edgar.fair_access import FairAccessLimiter

REPO = Path(__file__).resolve().parents[1]


class VirtualTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def limiter(path: Path, clock: VirtualTime, **kwargs) -> FairAccessLimiter:
    return FairAccessLimiter(path, clock=clock.clock, sleep=clock.sleep, **kwargs)


def test_two_limiters_on_one_file_share_the_pace(tmp_path):
    clock = VirtualTime()
    first, second = (limiter(tmp_path / "state", clock, max_rps=10.0, headroom=0.0) for _ in range(2))
    starts = []
    for i in range(6):
        ticket = (first if i % 2 else second).acquire()
        starts.append(round(ticket.started - 1_000.0, 6))
        (first if i % 2 else second).release(ticket, responded_at=ticket.started + 0.01)
    assert starts == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_a_request_counts_until_one_second_after_its_response_began(tmp_path):
    clock = VirtualTime()
    gate = limiter(tmp_path / "state", clock, max_rps=10.0, headroom=0.0)
    tickets = [gate.acquire() for _ in range(10)]
    for ticket in tickets:  # slow responses: each began 0.5 s after its request was sent
        gate.release(ticket, responded_at=ticket.started + 0.5)
    eleventh = gate.acquire()
    # The pace alone would allow it at 1.0 s; the first request counts until 0.0 + 0.5 + 1.0.
    assert round(eleventh.started - 1_000.0, 6) == 1.5


def test_a_request_never_released_stops_counting_after_hold_s(tmp_path):
    clock = VirtualTime()
    gate = limiter(tmp_path / "state", clock, max_rps=2.0, headroom=0.0, hold_s=30.0)
    gate.acquire()
    gate.acquire()  # both holders die without releasing
    assert round(gate.acquire().started - 1_000.0, 6) == 30.0


def test_a_cool_down_set_by_one_process_holds_back_another(tmp_path):
    clock = VirtualTime()
    refused, other = (limiter(tmp_path / "state", clock, max_rps=10.0) for _ in range(2))
    assert refused.cool_down(7.0) == 7.0
    assert refused.cool_down(2.0) == 7.0  # a shorter one does not cut a running cool-down short
    assert round(other.cooldown_remaining(), 6) == 7.0
    assert round(other.acquire().started - 1_000.0, 6) == 7.0


def test_a_damaged_state_file_is_started_afresh(tmp_path):
    (tmp_path / "state").write_bytes(b"not a state file")
    clock = VirtualTime()
    assert limiter(tmp_path / "state", clock).acquire().started == 1_000.0


WORKER = textwrap.dedent("""
    import json, pathlib, sys, time
    from governed_ft_dagster.edgar.fair_access import FairAccessLimiter
    gate = FairAccessLimiter(sys.argv[1], max_rps=20.0)
    pathlib.Path(sys.argv[2]).touch()
    while not pathlib.Path(sys.argv[3]).exists():
        time.sleep(0.005)
    starts = []
    for _ in range(12):
        with gate.request() as ticket:
            starts.append(ticket.started)
    print(json.dumps(starts))
""")


def test_processes_sharing_a_state_folder_share_one_limit(tmp_path):
    go = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "state"), str(tmp_path / f"ready-{i}"),
                                 str(go)], cwd=REPO, stdout=subprocess.PIPE, text=True) for i in range(3)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    starts = sorted(t for w in workers for t in json.loads(w.communicate(timeout=60)[0]))
    assert all(w.returncode == 0 for w in workers)
    assert len(starts) == 36
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 1.03 / 20 - 1e-6  # one pace for the three processes, not one each
    assert max(sum(1 for u in starts if t <= u < t + 1.0) for t in starts) <= 20


def test_the_raw_steps_share_the_edgar_pool_and_run_in_their_run_process(tmp_path, monkeypatch):
    import dagster as dg

    from governed_ft_dagster.defs.build import build_defs
    from governed_ft_dagster.settings import load_settings

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = load_settings({"GOVERNED_FT_HOME": str(tmp_path / "state")})
    defs = build_defs(settings)
    raw = defs.get_assets_def("raw_risk_factors")
    assert raw.op.pool == "edgar"
    assert defs.resolve_job_def("raw_refresh_job").executor_def is dg.in_process_executor
    home = settings.prepare_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 4

"""SEC fair access for every process of one state folder: one pace, one request window, one cool-down (no Dagster).

The state lives in a small file under an exclusive `fcntl` lock held for microseconds. Pace: requests start
`(1 + headroom) / max_rps` apart, and never sooner than that after the latest start. Window: a request counts from
before it is sent until `window_s` after its response began, at most `max_rps * window_s` at once, so however late
a loaded machine sends or SEC stamps a request, no sliding second at SEC holds more than `max_rps` of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_HEADER = struct.Struct("<ddd")  # next free slot, end of the cool-down, start of the latest request
_ENTRY = struct.Struct("<dQ")  # until when a request counts against the window, its ticket id (0: free)
_CAPACITY = 256
_SIZE = _HEADER.size + _CAPACITY * _ENTRY.size
# A time further ahead than this is left from a clock that stepped back (or a crashed holder): it is dropped.
_MAX_AHEAD_S = 3600.0


@dataclass(frozen=True)
class Ticket:
    """One admitted request: its place in the window and when it started."""

    index: int
    id: int
    started: float


@dataclass
class _State:
    next_slot: float
    cooldown_until: float
    last_start: float
    entries: list[list]

    @classmethod
    def parse(cls, raw: bytes) -> _State:
        if len(raw) != _SIZE:
            return cls(0.0, 0.0, 0.0, [[0.0, 0] for _ in range(_CAPACITY)])
        head = _HEADER.unpack_from(raw)
        return cls(*head, [list(e) for e in _ENTRY.iter_unpack(raw[_HEADER.size:])])

    def packed(self) -> bytes:
        return _HEADER.pack(self.next_slot, self.cooldown_until, self.last_start) + b"".join(
            _ENTRY.pack(until, ticket) for until, ticket in self.entries)


class FairAccessLimiter:
    """A request pace, a request window and a cool-down kept in `path`, shared by all threads and processes."""

    def __init__(self, path: Path | str, max_rps: float = 10.0, headroom: float = 0.03, window_s: float = 1.0,
                 hold_s: float = 60.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_rps <= 0:
            raise ValueError("max_rps must be positive")
        if headroom < 0:
            raise ValueError("headroom must not be negative")
        self.path = Path(path)
        self.max_rps = max_rps
        self.interval = (1.0 + headroom) / max_rps
        self.window_s = window_s
        self.per_window = max(1, min(_CAPACITY, int(max_rps * window_s)))
        # A request whose holder died before it could release it stops counting after this long.
        self.hold_s = hold_s
        self._clock, self._sleep = clock, sleep
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def _descriptor(self) -> int:
        # A descriptor inherited across fork shares its lock with the parent: each process opens its own.
        if self._fd is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            self._pid = os.getpid()
        return self._fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_State]:
        with self._thread_lock:
            fd = self._descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, _SIZE, 0)
                state = _State.parse(raw)
                limit = self._clock() + _MAX_AHEAD_S
                state.next_slot, state.cooldown_until, state.last_start = (
                    t if t <= limit else 0.0 for t in (state.next_slot, state.cooldown_until, state.last_start))
                for entry in state.entries:
                    if entry[0] > limit + self.hold_s:
                        entry[:] = [0.0, 0]
                yield state
                packed = state.packed()
                if packed != raw:
                    os.pwrite(fd, packed, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def acquire(self) -> Ticket:
        """Block until this caller may start one request; release the ticket once its response began."""
        slot: float | None = None
        while True:
            with self._locked() as state:
                now = self._clock()
                counting = [until for until, ticket in state.entries[:self.per_window] if ticket and until > now]
                if state.cooldown_until > now:
                    slot, wait = None, state.cooldown_until - now
                elif slot is None:
                    slot = max(state.next_slot, now)
                    state.next_slot = slot + self.interval
                    wait = slot - now
                elif now < state.last_start + self.interval:
                    wait = state.last_start + self.interval - now  # keeps this caller's place
                elif len(counting) >= self.per_window:
                    wait = min(min(counting) - now, self.interval)  # a request in flight may end any moment
                else:
                    index = next(i for i, (until, ticket) in enumerate(state.entries[:self.per_window])
                                 if not ticket or until <= now)
                    ticket = Ticket(index, random.getrandbits(63) | 1, now)
                    state.entries[index] = [now + self.hold_s, ticket.id]
                    state.last_start = now
                    return ticket
            self._sleep(max(wait, 0.0))

    def release(self, ticket: Ticket, responded_at: float | None = None) -> None:
        """The request's response began (or it failed) at `responded_at` (now): it counts for window_s more."""
        with self._locked() as state:
            entry = state.entries[ticket.index]
            if entry[1] == ticket.id:
                entry[0] = (responded_at if responded_at is not None else self._clock()) + self.window_s

    @contextlib.contextmanager
    def request(self) -> Iterator[Ticket]:
        """acquire() on entering, release() on leaving: wrap exactly the sending and the wait for the response."""
        ticket = self.acquire()
        try:
            yield ticket
        finally:
            self.release(ticket)

    def cool_down(self, seconds: float) -> float:
        """Hold every caller of this state folder back for `seconds` from now (kept if a longer one is running)."""
        with self._locked() as state:
            now = self._clock()
            state.cooldown_until = max(state.cooldown_until, now + max(0.0, seconds))
            return state.cooldown_until - now

    def cooldown_remaining(self) -> float:
        """Seconds left of the current cool-down (0 when none)."""
        with self._locked() as state:
            return max(0.0, state.cooldown_until - self._clock())

    def close(self) -> None:
        """Close this process's descriptor (the state file stays for the other processes)."""
        with self._thread_lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created if absent) across threads and processes, released on leaving."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

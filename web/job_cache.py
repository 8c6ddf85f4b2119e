"""Jobs a web process answered, kept in memory until PostgreSQL says their row changed.

Polling a job is the most frequent request a job service gets, and most polls find the job as it was:
queued behind others, or finished. Reading the row (and its files) each time cost more than the rest of
the request together (one round trip and an ORM load, ~1 ms of CPU, several times a bare endpoint). The
table stays the source of truth: every change of a job or of its files NOTIFYs ``atelier_jobs`` with the
job's id (a trigger, migration 0005, so every writer is covered), and each web process LISTENs on a
connection of its own and drops that job from its cache.

Why an entry is never served stale:

- entries are served only while the LISTEN connection is up: when it drops, the cache is emptied and
  bypassed until LISTEN is back (changes made meanwhile were not heard);
- a read that raced a change is not kept: every eviction bumps a generation, and a loaded job is stored
  only if no eviction happened since its load began (the notification may arrive before or after);
- this process's own writes (cancel, rename, delete...) evict at once, before their response is sent
  (:func:`install`), so a client reads its own write from this process without waiting for the
  notification. Another process's write is heard within milliseconds of its commit.

Only the job row and its files are cached; what depends on the clock or on other jobs (a queued job's
position and estimated start, a running job's seconds left) is computed at each request. SQLite has no
NOTIFY: the embedded mode reads the table every time. Hand-written: it is one dictionary and one thread,
smaller than adapting a general cache library to this invalidation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, request

log = logging.getLogger(__name__)

CHANNEL = "atelier_jobs"
#: Jobs kept per process (the least recently read go first). An entry (the job, its files and its encoded
#: JSON) is ~12 KB, so the cache holds at most ~50 MB; the jobs people poll are far fewer.
MAX_ENTRIES = 4_000
#: How long the listener waits for notifications before checking that its connection is alive.
ALIVE_CHECK_S = 1.0
#: Wait before reconnecting after the connection failed.
RECONNECT_S = 1.0


class JobCache:
    """``get(job_id, load)``: what ``load(job_id)`` returned when this job was last read, if its row has not
    changed since; else ``load(job_id)``, kept for the next time (a None is not kept)."""

    def __init__(self, database_url: str) -> None:
        self.enabled = database_url.startswith("postgresql")
        self._dsn = _libpq_dsn(database_url) if self.enabled else ""
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0
        self._waiters: dict[str, set[threading.Event]] = {}  # job id -> requests waiting for its change
        self._live = False  # LISTEN is established: entries may be served
        self._thread_pid: int | None = None
        self._stop = threading.Event()

    # -- reading -----------------------------------------------------------------------------------
    def get(self, job_id: str, load: Callable[[str], Any]) -> Any:
        if not self.enabled:
            return load(job_id)
        self._ensure_listener()
        if self._live:
            with self._lock:
                job = self._entries.get(job_id)
                if job is not None:
                    self._entries.move_to_end(job_id)
                    return job
                generation = self._generation
        else:
            generation = None
        job = load(job_id)
        if job is not None and generation is not None:
            with self._lock:
                if self._live and self._generation == generation:
                    self._entries[job_id] = job
                    if len(self._entries) > MAX_ENTRIES:
                        self._entries.popitem(last=False)
        return job

    def evict(self, job_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._entries.pop(job_id, None)
            waiters = list(self._waiters.get(job_id, ()))
        for event in waiters:
            event.set()

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[threading.Event | None]:
        """An event set whenever the job is notified as changed (and when notifications stop), for as long
        as the block runs; None when changes cannot be heard (not listening): the caller polls instead.
        Registered before the caller looks at the job, so a change in between is not missed."""
        if self.enabled:
            self._ensure_listener()
        if not self.enabled or not self._live:
            yield None
            return
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[job_id]

    def _set_live(self, live: bool) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._live = live
            waiters = [e for events in self._waiters.values() for e in events]
        for event in waiters:  # whatever changed meanwhile was not heard: the waiters look for themselves
            event.set()

    @property
    def live(self) -> bool:
        return self._live

    def close(self) -> None:
        self._stop.set()
        self._set_live(False)

    # -- listening ---------------------------------------------------------------------------------
    def _ensure_listener(self) -> None:
        """Start the listener in this process on first use (a forked server process starts its own)."""
        pid = os.getpid()
        if self._thread_pid == pid:
            return
        with self._lock:
            if self._thread_pid == pid:
                return
            self._thread_pid = pid
            self._live = False
            self._entries.clear()
        ref = weakref.ref(self)
        threading.Thread(target=_listen, args=(ref, self._dsn, self._stop), name="atelier-job-cache",
                         daemon=True).start()


def _listen(ref: "weakref.ReferenceType[JobCache]", dsn: str, stop: threading.Event) -> None:
    """LISTEN and evict until the cache is closed or garbage (the thread holds only a weak reference, so
    an app that is dropped, as tests do, takes its listener with it)."""
    import psycopg

    while not stop.is_set() and ref() is not None:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                cache = ref()
                if cache is None:
                    return
                cache._set_live(True)
                del cache
                while not stop.is_set():
                    for note in conn.notifies(timeout=ALIVE_CHECK_S):
                        cache = ref()
                        if cache is None:
                            return
                        cache.evict(note.payload)
                        del cache
                    if ref() is None:
                        return
                    conn.execute("SELECT 1")  # a dead connection raises here within ALIVE_CHECK_S
        except Exception as exc:  # the database is down or restarting: bypass the cache until LISTEN is back
            cache = ref()
            if cache is not None:
                if cache.live:
                    log.warning("job cache: lost the notification connection (%s); reading the table until it is "
                                "back", exc.__class__.__name__)
                cache._set_live(False)
                del cache
            stop.wait(RECONNECT_S)
    cache = ref()
    if cache is not None:
        cache._set_live(False)


def _libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://...``) as psycopg's own connection string."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def install(app: Flask, cache: JobCache) -> None:
    """This process's writes evict at once: any request other than a read that names a job."""

    @app.after_request
    def _evict_written(resp):  # type: ignore[no-untyped-def]
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.view_args:
            job_id = request.view_args.get("job_id")
            if isinstance(job_id, str):
                cache.evict(job_id)
        return resp

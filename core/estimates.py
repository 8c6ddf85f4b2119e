"""How long a job will take: before it is submitted, while it waits in the queue, and while it runs.

The model has two halves:

- a *cost model* per kind (:func:`step_cost`): the relative work of one step from the parameters (pixels
  per step times the width of the networks), in "units" that only need to be proportional to the time a
  step takes on one device;
- *measured speed* per kind and device: each worker process records, when a job succeeds, the units per
  second its steady steps ran at and the job's fixed overhead (loading, the final outputs), smoothed over
  the jobs it ran, in its ``workers.info`` JSON (:func:`record_speed`). An estimate takes the newest
  record for the kind and device; with none yet, a built-in speed measured on a 2-core AMD EPYC
  (``bench/demo_job.py``) stands in, and the answer says it is a guess (``basis: "default"``).

While a job runs, :class:`RateMeter` turns its step reports into a rate over recent steps, ignoring the
first steps (warm-up: allocation, first-call kernel choice) and smoothing the rest, so the ETA does not
start at several times the truth. Queued jobs get a position and an estimated start
(:func:`queue_info`): the remaining time of the running jobs and of the queued jobs ahead, shared among
the live workers.

Nothing here imports torch, Flask or Celery.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, or_, select, update

from core.models import Job, Worker, as_utc, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.orm import Session, sessionmaker

#: Where a worker keeps its measurements in ``workers.info``.
SPEED_KEY = "speed"
#: Weight of a new measurement in the smoothed speed (the rest is the earlier jobs').
SPEED_SMOOTHING = 0.5
#: Warm-up steps a rate ignores, and the weight of the newest step rate in its moving average.
WARMUP_STEPS, RATE_SMOOTHING = 3, 0.2

#: Built-in speeds (units per second, overhead seconds) for a kind with no measurement yet, by device:
#: the demo job and a 256 px style transfer on a 2-core AMD EPYC (no AVX-512), fp32. A GPU is assumed 20x.
DEFAULT_SPEED: dict[str, tuple[float, float]] = {
    "cyclegan_train": (6.0e4, 8.0), "pix2pix_train": (6.0e4, 8.0), "style_transfer": (1.2e5, 5.0),
    "translate": (2.0e6, 3.0),
}
GPU_FACTOR = 20.0


def _devices(device: str | None) -> str:
    return "cuda" if device and device.startswith("cuda") else "cpu"


def step_cost(kind: str, params: Mapping[str, Any]) -> float:
    """Relative work of one step of ``kind`` with ``params`` (0 when the kind has no such model).

    GAN training: crop pixels x batch x the networks' widths (a ResNet-9 generator does ~1.4x the work
    of a ResNet-6; two generators and two discriminators for CycleGAN). Style transfer: output pixels
    (each step is one VGG-19 forward and backward). Only ratios between parameters of one kind matter.
    """
    if kind in ("cyclegan_train", "pix2pix_train"):
        size = int(params.get("size") or 128)
        batch = int(params.get("batch_size") or 1)
        ngf, ndf = int(params.get("ngf") or 64), int(params.get("ndf") or 64)
        blocks = {"resnet_9blocks": 1.4, "resnet_6blocks": 1.0}.get(str(params.get("netG")), 1.2)
        nets = 2.0 if kind == "cyclegan_train" else 1.0
        return size * size * batch * nets * (blocks * ngf + 0.5 * ndf) / 16.0
    if kind == "style_transfer":
        size = int(params.get("size") or 256)
        return size * size * 0.75  # the other side keeps the photo's aspect: about 3:4 on average
    return 0.0


def total_steps(kind: str, params: Mapping[str, Any]) -> int:
    from core.kinds.registry import get_kind

    k = get_kind(kind)
    try:
        return int(k.total_steps(params)) if k is not None else 0
    except Exception:  # a kind's step count must never break an estimate
        return 0


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: no model for this kind or step count unknown (epochs)
    device: str
    basis: str  # "measured" (a worker's record) | "default" (built-in guess) | "unknown"
    steps: int
    units_per_second: float | None = None
    overhead_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": None if self.seconds is None else round(self.seconds, 1), "device": self.device,
                "basis": self.basis, "steps": self.steps, "text": describe(self)}


def describe(est: Estimate) -> str:
    """'about 3 min on cpu' (what the form shows)."""
    if est.seconds is None:
        return "no estimate for these settings"
    s = est.seconds
    if s < 60:
        amount = "under a minute"
    elif s < 3600:
        amount = f"about {max(1, round(s / 60))} min"
    else:
        amount = f"about {s / 3600:.1f} h"
    return f"{amount} on {est.device}" + (" (a first guess until a job of this kind has run)"
                                           if est.basis == "default" else "")


def measured_speed(sessions: "sessionmaker[Session]", kind: str, device: str) -> tuple[float, float] | None:
    """(units per second, overhead seconds) most recently recorded by any worker for ``kind`` on ``device``."""
    with sessions() as s:
        rows = s.execute(select(Worker.info, Worker.last_seen_at).order_by(Worker.last_seen_at.desc())
                         .limit(200)).all()
    for info, _seen in rows:
        rec = ((info or {}).get(SPEED_KEY) or {}).get(f"{kind}@{device}")
        if rec and rec.get("units_per_s", 0) > 0:
            return float(rec["units_per_s"]), float(rec.get("overhead_s", 0.0))
    return None


def live_device(sessions: "sessionmaker[Session]") -> str:
    """The device jobs run on by default: a live worker's (cuda when any has a GPU), else cpu."""
    with sessions() as s:
        devices = [d for (d,) in s.execute(select(Worker.device).where(Worker.state.in_(("online", "busy"))))]
    return "cuda" if any(d and d.startswith("cuda") for d in devices) else "cpu"


def estimate(sessions: "sessionmaker[Session]", kind: str, params: Mapping[str, Any],
             cache: dict[Any, Any] | None = None) -> Estimate:
    """Seconds a job of ``kind`` with validated ``params`` should take once a worker starts it.
    ``cache`` (a dict kept by the caller) saves the look-ups when estimating many jobs at once."""
    cache = {} if cache is None else cache
    device = params.get("device")
    if device and device != "auto":
        device = _devices(device)
    else:
        if "device" not in cache:
            cache["device"] = live_device(sessions)
        device = cache["device"]
    steps = total_steps(kind, params)
    cost = step_cost(kind, params)
    if steps <= 0 or cost <= 0:
        return Estimate(None, device, "unknown", steps)
    if (kind, device) not in cache:
        cache[(kind, device)] = measured_speed(sessions, kind, device)
    found = cache[(kind, device)]
    basis = "measured"
    if found is None:
        rate, overhead = DEFAULT_SPEED.get(kind, (0.0, 0.0))
        if rate <= 0:
            return Estimate(None, device, "unknown", steps)
        found, basis = (rate * (GPU_FACTOR if device == "cuda" else 1.0), overhead), "default"
    units_per_s, overhead = found
    return Estimate(steps * cost / units_per_s + overhead, device, basis, steps, units_per_s, overhead)


def record_speed(sessions: "sessionmaker[Session]", worker_id: str, kind: str, device: str,
                 params: Mapping[str, Any], steps_per_second: float, overhead_seconds: float) -> None:
    """Fold one finished job's measured speed into the worker's ``info`` (smoothed with earlier jobs)."""
    cost = step_cost(kind, params)
    if cost <= 0 or not steps_per_second or not math.isfinite(steps_per_second) or steps_per_second <= 0:
        return
    units = cost * steps_per_second
    key = f"{kind}@{_devices(device)}"
    with sessions.begin() as s:
        row = s.get(Worker, worker_id)
        if row is None:
            return
        info = dict(row.info or {})
        speeds = dict(info.get(SPEED_KEY) or {})
        old = speeds.get(key)
        if old and old.get("units_per_s", 0) > 0:
            units = SPEED_SMOOTHING * units + (1 - SPEED_SMOOTHING) * float(old["units_per_s"])
            overhead_seconds = (SPEED_SMOOTHING * overhead_seconds
                                + (1 - SPEED_SMOOTHING) * float(old.get("overhead_s", overhead_seconds)))
        speeds[key] = {"units_per_s": round(units, 3), "overhead_s": round(max(0.0, overhead_seconds), 2),
                       "jobs": int((old or {}).get("jobs", 0)) + 1, "at": utcnow().isoformat()}
        info[SPEED_KEY] = speeds
        s.execute(update(Worker).where(Worker.id == worker_id).values(info=info))


class RateMeter:
    """Steps per second over recent steps: the first :data:`WARMUP_STEPS` steps are ignored and the rest
    smoothed (an exponential moving average of the rate between reports at least ``min_interval`` apart).
    Also keeps what an estimate needs after the job: the steady rate and the time outside steady steps."""

    def __init__(self, started: float, min_interval: float = 0.5) -> None:
        self.started = started
        self.min_interval = min_interval
        self.first: tuple[int, float] | None = None  # (step, time) where measuring began
        self.last: tuple[int, float] | None = None
        self._mark: tuple[int, float] | None = None
        self.rate: float | None = None  # smoothed steps per second

    def add(self, step: int, now: float) -> None:
        if self.first is None:
            if step < WARMUP_STEPS:
                return
            self.first = self._mark = self.last = (step, now)
            return
        self.last = (step, now)
        assert self._mark is not None
        m_step, m_time = self._mark
        if step <= m_step or now - m_time < self.min_interval:
            return
        recent = (step - m_step) / (now - m_time)
        self.rate = recent if self.rate is None else RATE_SMOOTHING * recent + (1 - RATE_SMOOTHING) * self.rate
        self._mark = (step, now)

    def eta(self, step: int, total: int) -> float | None:
        if not self.rate or total <= 0 or step >= total:
            return None
        return (total - step) / self.rate

    def steady_rate(self) -> float | None:
        """Mean steps per second from the end of warm-up to the last step (None before two reports)."""
        if self.first is None or self.last is None or self.last[0] <= self.first[0] or self.last[1] <= self.first[1]:
            return None
        return (self.last[0] - self.first[0]) / (self.last[1] - self.first[1])


# ---------------------------------------------------------------------------------------------------
# The queue
# ---------------------------------------------------------------------------------------------------
def _remaining(sessions: "sessionmaker[Session]", job: Any, now: dt.datetime, cache: dict[Any, Any]) -> float:
    """Seconds a job still needs: a running job from its ETA (or its estimate less its elapsed time).
    ``job``: a :class:`Job` or a row of its columns (kind, status, params, metrics, updated_at, started_at)."""
    if job.status == "running":
        eta = ((job.metrics or {}).get("timing") or {}).get("eta_s")
        if isinstance(eta, (int, float)) and eta >= 0:
            updated = as_utc(job.updated_at)
            since = (now - updated).total_seconds() if updated is not None else 0.0
            return max(0.0, float(eta) - max(0.0, since))
    est = estimate(sessions, job.kind, job.params or {}, cache).seconds or 0.0
    if job.status == "running" and job.started_at is not None:
        started = as_utc(job.started_at)
        est = max(0.0, est - (now - started).total_seconds())
    return est


def _count_ahead(high: bool, since: bool) -> Any:
    """The count of queued jobs served before a job, high priority first, then in order of submission
    (bound parameters ``job_id`` and ``created``; with ``since``, only those submitted after ``since``).
    Built once, so a poll neither builds nor compiles it."""
    job_id, created = bindparam("job_id"), bindparam("created", type_=Job.created_at.type)
    before = or_(Job.created_at < created, (Job.created_at == created) & (Job.id < job_id))
    ahead = (Job.priority == "high") & before if high else or_(Job.priority == "high", before)
    waiting = [Job.status == "queued", Job.deleted_at.is_(None), Job.id != job_id, ahead]
    if since:
        waiting.append(Job.created_at > bindparam("since", type_=Job.created_at.type))
    return select(func.count()).select_from(Job).where(*waiting)


_COUNT_AHEAD = {(high, since): _count_ahead(high, since) for high in (False, True) for since in (False, True)}


def queue_info(sessions: "sessionmaker[Session]", job: Job, now: dt.datetime | None = None
               ) -> tuple[int | None, dt.datetime | None]:
    """(1-based position in the queue, estimated start) of a queued job; (None, None) otherwise.

    Both come from a snapshot of the queue (the queued jobs in service order with their estimates, the
    running jobs' remaining time, the live workers), shared by every request of the process and rebuilt
    only when the queue or the workers changed, and at most once per :data:`SNAPSHOT_MIN_INTERVAL_S`: a
    list of 100 queued jobs, or programs polling while a backlog drains, used to load and estimate up to
    1000 rows for every job shown. A job the snapshot does not hold yet (submitted since) is counted once
    against it. Positions and starts are therefore as of the snapshot: at most a refresh interval old."""
    if job.status != "queued":
        return None, None
    now = now or utcnow()
    snap = _queue_snapshot(sessions, now)
    index = snap.order.get(job.id)
    if index is not None:
        ahead = index
    elif job.id in snap.counted:
        ahead = snap.counted[job.id]
    else:
        # Submitted since the snapshot (a new job's own answer): the snapshot's jobs ahead of it, and a
        # count of only the jobs submitted since (an index range); else a full count. Kept with the
        # snapshot, so polls of the job until the next refresh count nothing.
        newer = snap.newest is not None and (as_utc(job.created_at) or now) > snap.newest
        statement = _COUNT_AHEAD[(job.priority == "high", newer)]
        params = {"job_id": job.id, "created": job.created_at, "since": snap.newest}
        with sessions() as s:
            ahead = s.scalar(statement, params) or 0
        if newer:
            ahead += snap.high if job.priority == "high" else len(snap.order)
        if len(snap.counted) < QUEUE_ORDER_ROWS:
            snap.counted[job.id] = ahead
    if snap.live == 0:
        return ahead + 1, None
    n_ahead = index if index is not None else len(snap.order)  # one behind the snapshot: after all of it
    work_ahead = snap.work_before[min(n_ahead, len(snap.work_before) - 1)]
    # A free worker starts the job at once; otherwise the work ahead is shared among the workers.
    wait = 0.0 if snap.running + n_ahead < snap.live else (snap.running_work + work_ahead) / snap.live
    return ahead + 1, now + dt.timedelta(seconds=wait)


@dataclass(frozen=True)
class _QueueSnapshot:
    key: tuple[Any, ...]
    checked: float  # time.monotonic() when its key was last compared with the tables
    valid_for: float  # seconds after ``checked`` it is used without looking (see SNAPSHOT_MAX_SHARE)
    running: int
    running_work: float  # seconds the running jobs still need
    order: dict[str, int]  # queued job id -> its index in service order
    high: int  # how many of them are high priority (they come first)
    newest: dt.datetime | None  # the latest submission time among them
    work_before: list[float]  # work_before[i]: seconds of the first i queued jobs (up to QUEUE_SNAPSHOT_ROWS)
    counted: dict[str, int] = field(default_factory=dict)  # jobs it does not hold: how many were ahead

    @property
    def live(self) -> int:
        """Workers online or busy (counted in the key: see :func:`_queue_key`)."""
        return int(self.key[2] or 0)


_snapshots: "weakref.WeakKeyDictionary[Any, _QueueSnapshot]" = weakref.WeakKeyDictionary()
_snapshots_lock = threading.Lock()
_rebuilding = threading.Lock()  # held while one thread refreshes a snapshot
QUEUE_SNAPSHOT_ROWS = 1000  # jobs further back are estimated as if at the snapshot's end
QUEUE_ORDER_ROWS = 100_000  # positions are known this far back (ids only); a job further back is counted
#: A snapshot younger than this is used without looking at the tables: estimated starts may lag the
#: queue by this much, while every poll of a queued job costs one indexed count instead of a rebuild
#: (progress writes and heartbeats change the queue's key many times a second on a busy cluster).
SNAPSHOT_MIN_INTERVAL_S = 1.0
#: ...and a refresh may take at most this share of a process's time: behind thousands of queued jobs a
#: refresh takes tens of milliseconds, and the interval grows with it (0 above: every change at once).
SNAPSHOT_MAX_SHARE = 0.02


def _valid_for(refresh_seconds: float) -> float:
    if not SNAPSHOT_MIN_INTERVAL_S:
        return 0.0
    return max(SNAPSHOT_MIN_INTERVAL_S, refresh_seconds / SNAPSHOT_MAX_SHARE)


def _queue_key(s: "Session") -> tuple[Any, ...]:
    """What changes when the queue's work or the workers change, in one round trip."""
    active = (Job.status.in_(("queued", "running")))
    live = Worker.state.in_(("online", "busy"))
    return tuple(s.execute(select(
        select(func.count()).select_from(Job).where(active).scalar_subquery(),
        select(func.max(Job.updated_at)).where(active).scalar_subquery(),
        select(func.count()).select_from(Worker).where(live).scalar_subquery(),
        select(func.max(Worker.last_seen_at)).where(live).scalar_subquery())).one())


def _queue_snapshot(sessions: "sessionmaker[Session]", now: dt.datetime) -> _QueueSnapshot:
    with _snapshots_lock:
        cached = _snapshots.get(sessions)
    checked = time.monotonic()
    if cached is not None and checked - cached.checked < cached.valid_for:
        return cached
    # One thread of the process refreshes it; the others answer from the one they have meanwhile (a
    # request thread waiting for another's rebuild, or rebuilding it too, only adds latency).
    if not _rebuilding.acquire(blocking=cached is None):
        return cached  # type: ignore[return-value]
    try:
        return _refresh_snapshot(sessions, now, cached, checked)
    finally:
        _rebuilding.release()


def _refresh_snapshot(sessions: "sessionmaker[Session]", now: dt.datetime, cached: _QueueSnapshot | None,
                      checked: float) -> _QueueSnapshot:
    # Only the columns an estimate reads: a full row load of 1000 jobs was most of a rebuild's time.
    columns = (Job.id, Job.kind, Job.status, Job.params, Job.metrics, Job.updated_at, Job.started_at)
    started = time.perf_counter()
    with sessions() as s:
        key = _queue_key(s)
        if cached is not None and cached.key == key:
            snap = replace(cached, checked=checked, valid_for=_valid_for(time.perf_counter() - started))
        else:
            waiting = (Job.status == "queued", Job.deleted_at.is_(None))
            in_order = ((Job.priority == "high").desc(), Job.created_at, Job.id)
            rows = s.execute(select(Job.id, Job.priority, Job.created_at).where(*waiting).order_by(*in_order)
                             .limit(QUEUE_ORDER_ROWS)).all()
            order = {row.id: i for i, row in enumerate(rows)}
            high = sum(1 for row in rows if row.priority == "high")
            newest = max((as_utc(row.created_at) for row in rows), default=None)
            queued = s.execute(select(*columns).where(*waiting).order_by(*in_order)
                               .limit(QUEUE_SNAPSHOT_ROWS)).all()
            running = s.execute(select(*columns).where(Job.status == "running").limit(200)).all()
            cache: dict[Any, Any] = {}
            work_before = [0.0]
            for j in queued:
                work_before.append(work_before[-1] + _remaining(sessions, j, now, cache))
            snap = _QueueSnapshot(key, checked, _valid_for(time.perf_counter() - started), len(running),
                                  sum(_remaining(sessions, j, now, cache) for j in running), order, high, newest,
                                  work_before)
    with _snapshots_lock:
        _snapshots[sessions] = snap
    return snap

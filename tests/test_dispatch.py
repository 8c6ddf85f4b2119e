"""The workers' monitors send each queued job's message once, and again only when it is missing."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace

from core.jobs import repository as repo
from core.models import Job, utcnow
from core.services import Services
from worker.dispatch import Dispatcher


class FakeBroker:
    """A Celery app stand-in: messages sent go to queues; a worker "takes" them; a restart loses them."""

    def __init__(self) -> None:
        self.queues: dict[str, list[str]] = {}
        self.sent: Counter[str] = Counter()
        self.conf = SimpleNamespace(task_default_queue="gpu")
        self.down = False
        self.run_id = "first"

    def send_task(self, _name: str, args: list[str], queue: str, **_kw: object) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.queues.setdefault(queue, []).append(args[0])
        self.sent[args[0]] += 1

    @contextlib.contextmanager
    def connection_for_read(self) -> Iterator[object]:
        def declare(queue: str, passive: bool) -> object:
            if queue not in self.queues:
                raise RuntimeError("Channel.queue_declare: (404) NOT_FOUND - no queue")
            return SimpleNamespace(message_count=len(self.queues[queue]))
        client = SimpleNamespace(info=lambda section: {"run_id": self.run_id})
        yield SimpleNamespace(default_channel=SimpleNamespace(queue_declare=declare, client=client))

    def take(self, queue: str = "gpu") -> str:
        return self.queues[queue].pop(0)

    def restart(self, tell: bool = False) -> None:
        self.queues.clear()
        if tell:
            self.run_id += "-again"


def queued(services: Services, n: int, sent_ago: float = 60, priority: str = "normal") -> list[str]:
    ids = []
    for _ in range(n):
        job = repo.create_job(services.sessions, Job(kind="style_transfer", params={}, priority=priority), [])
        assert repo.claim_dispatch(services.sessions, job.id, sent_before=None,
                                   now=utcnow() - dt.timedelta(seconds=sent_ago))
        ids.append(job.id)
    return ids


def test_a_healthy_backlog_is_never_resent(any_services: Services) -> None:
    broker = FakeBroker()
    ids = queued(any_services, 5)
    broker.queues["gpu"] = list(ids)
    d = Dispatcher(broker, any_services)  # type: ignore[arg-type]
    for _ in range(5):
        assert d.sweep([]).sent == 0
    assert sum(broker.sent.values()) == 0


def test_messages_lost_in_a_broker_restart_are_resent_once(any_services: Services) -> None:
    broker = FakeBroker()
    ids = queued(any_services, 6)
    d = Dispatcher(broker, any_services)  # type: ignore[arg-type]
    broker.restart()  # nothing waits in the broker any more
    assert d.sweep([]).sent == 0, "a deficit seen once may be a message being claimed right now"
    assert sorted(d.sweep([]).missing) == sorted(ids)
    for _ in range(3):
        assert d.sweep([]).sent == 0
    assert set(broker.sent.values()) == {1} and len(broker.sent) == 6
    rows = [repo.get_job(any_services.sessions, j) for j in ids]
    assert all(r is not None and r.dispatch_count == 2 for r in rows)


def test_a_message_taken_by_a_worker_that_died_is_resent(any_services: Services) -> None:
    broker = FakeBroker()
    ids = queued(any_services, 3)
    broker.queues["gpu"] = list(ids)
    broker.take()  # a worker took the oldest message and died before claiming the job
    d = Dispatcher(broker, any_services)  # type: ignore[arg-type]
    d.sweep([])
    assert d.sweep([]).missing == [ids[0]]
    assert broker.sent == Counter({ids[0]: 1})


def test_jobs_the_broker_never_got_are_sent_and_recovered_ones_resent(any_services: Services) -> None:
    broker = FakeBroker()
    job = repo.create_job(any_services.sessions, Job(kind="style_transfer", params={}, priority="high",
                                                     created_at=utcnow() - dt.timedelta(seconds=10)), [])
    d = Dispatcher(broker, any_services)  # type: ignore[arg-type]
    broker.down = True
    assert d.sweep([]).sent == 0
    assert repo.never_dispatched(any_services.sessions, created_before=utcnow()) == [job.id], "still unsent"
    broker.down = False
    assert d.sweep([]).never_sent == [job.id]
    assert broker.queues == {"gpu.high": [job.id]}, "high priority goes to the queue workers serve first"
    broker.take("gpu.high")
    assert d.sweep([job.id]).recovered == [job.id]


def test_two_monitors_send_a_lost_message_once(any_services: Services) -> None:
    broker = FakeBroker()
    ids = queued(any_services, 4)
    a, b = Dispatcher(broker, any_services), Dispatcher(broker, any_services)  # type: ignore[arg-type]
    for _ in range(3):
        a.sweep([])
        b.sweep([])
    assert len(broker.sent) == 4 and set(broker.sent.values()) == {1}
    assert all(j in broker.queues["gpu"] for j in ids)


def test_a_broker_that_says_it_restarted_gets_its_messages_back_at_once(any_services: Services) -> None:
    broker = FakeBroker()
    ids = queued(any_services, 3)
    broker.queues["gpu"] = list(ids)
    d = Dispatcher(broker, any_services)  # type: ignore[arg-type]
    assert d.sweep([]).sent == 0
    broker.restart(tell=True)
    assert sorted(d.sweep([]).missing) == sorted(ids), "no second sweep needed: the broker said so"

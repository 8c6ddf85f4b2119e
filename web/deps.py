"""Access to the process-wide handles the app factory stored on the Flask app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from flask import current_app

from core.services import Services
from core.models import Job
from web.job_cache import JobCache
from worker.enqueue import dispatch_new_job, send_submitted

EXAMPLES_DIR = Path(__file__).resolve().parent / "static" / "examples"


@dataclass
class WebState:
    services: Services
    celery: Celery
    job_cache: JobCache


def state() -> WebState:
    return current_app.extensions["atelier"]


def services() -> Services:
    return state().services


def job_cache() -> JobCache:
    return state().job_cache


def enqueue(job_id: str, priority: str = "normal") -> bool:
    """Send the message of a queued job that has none yet (a retried one), counted in its row first."""
    return dispatch_new_job(state().celery, services().sessions, job_id, priority)


def send_submitted_job(job: Job) -> bool:
    """Send the message of a job submitted with ``dispatching=True`` (its row already counts it)."""
    return send_submitted(state().celery, services().sessions, job)


def example_styles() -> list[str]:
    """File names of the bundled example paintings, offered on the form."""
    return sorted(p.name for p in (EXAMPLES_DIR / "styles").glob("*.jpg"))

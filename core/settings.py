"""Typed settings, parsed once from ``ATELIER_*`` environment variables.

No other module reads the environment. :func:`load_settings` validates every value and raises
:class:`core.errors.ConfigError` with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import ConfigError

#: Host names a loopback-bound service answers to when ATELIER_ALLOWED_HOSTS is not set.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    database_url: str = ""  # default: SQLite file under data_dir
    broker_url: str = ""  # default: kombu's filesystem transport under data_dir
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    vgg19_weights: str = ""  # "" = torchvision's ImageNet weights via TORCH_HOME; a path; or "random"
    max_upload_mb: int = 50
    max_image_pixels: int = 40_000_000
    max_output_size: int = 4096  # longest side of a style-transfer output, before the memory estimate
    # -- bounds on what one request or one job may cost (issue 9) -----------------------------------
    allowed_hosts: tuple[str, ...] | None = None  # None: loopback names when bound to loopback, else any
    max_files_per_field: int = 32  # files in one upload field of a job (e.g. style images)
    max_job_pixels: int = 200_000_000  # decoded pixels of all a job's uploaded images together
    max_form_parts: int = 1000  # multipart parts in one request
    dataset_max_side: int = 1024  # dataset images are re-encoded at ingest to at most this longest side
    dataset_max_files: int = 20_000  # members of a dataset upload (archive members or files)
    worker_max_memory_mb: int = 4096  # a worker child above this RSS after a job is replaced (0: never)
    time_limits: Mapping[str, int] = field(default_factory=dict)  # kind -> seconds, over the kind's default
    queue: str = "gpu"
    lease_seconds: int = 60
    heartbeat_seconds: float = 10.0
    progress_interval: float = 1.0  # seconds between progress writes to the database
    preview_every: int = 10  # steps between previews
    max_attempts: int = 3
    worker_concurrency: int = 1
    torch_threads: int = 0  # 0 = torch's default
    log_level: str = "INFO"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'atelier.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def broker_dir(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def storage_dir(self) -> Path:
        return (self.data_dir / "files").resolve()

    @property
    def host_allow_list(self) -> tuple[str, ...]:
        """The host names requests may address (``Host`` header, and ``Origin`` of POSTs); empty: any.

        Unset, a service bound to loopback answers only to loopback names (what a DNS-rebinding page
        cannot send); one bound elsewhere answers to any name, and ``/healthz`` warns about it."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        return LOOPBACK_HOSTS if is_loopback(self.host) else ()

    def with_overrides(self, **kw: object) -> "Settings":
        return replace(self, **kw)  # type: ignore[arg-type]


_SPEC: dict[str, tuple[str, Callable[[str], object]]] = {
    "ATELIER_DATA_DIR": ("data_dir", Path),
    "ATELIER_DATABASE_URL": ("database_url", str),
    "ATELIER_BROKER_URL": ("broker_url", str),
    "ATELIER_HOST": ("host", str),
    "ATELIER_PORT": ("port", int),
    "ATELIER_DEVICE": ("device", str),
    "ATELIER_VGG19_WEIGHTS": ("vgg19_weights", str),
    "ATELIER_MAX_UPLOAD_MB": ("max_upload_mb", int),
    "ATELIER_MAX_IMAGE_PIXELS": ("max_image_pixels", int),
    "ATELIER_MAX_OUTPUT_SIZE": ("max_output_size", int),
    "ATELIER_ALLOWED_HOSTS": ("allowed_hosts", lambda raw: tuple(h.strip().lower() for h in raw.split(",") if h.strip())),
    "ATELIER_MAX_FILES_PER_FIELD": ("max_files_per_field", int),
    "ATELIER_MAX_JOB_PIXELS": ("max_job_pixels", int),
    "ATELIER_MAX_FORM_PARTS": ("max_form_parts", int),
    "ATELIER_DATASET_MAX_SIDE": ("dataset_max_side", int),
    "ATELIER_DATASET_MAX_FILES": ("dataset_max_files", int),
    "ATELIER_WORKER_MAX_MEMORY_MB": ("worker_max_memory_mb", int),
    "ATELIER_TIME_LIMITS": ("time_limits", lambda raw: _parse_limits(raw)),
    "ATELIER_QUEUE": ("queue", str),
    "ATELIER_LEASE_SECONDS": ("lease_seconds", int),
    "ATELIER_HEARTBEAT_SECONDS": ("heartbeat_seconds", float),
    "ATELIER_PROGRESS_INTERVAL": ("progress_interval", float),
    "ATELIER_PREVIEW_EVERY": ("preview_every", int),
    "ATELIER_MAX_ATTEMPTS": ("max_attempts", int),
    "ATELIER_WORKER_CONCURRENCY": ("worker_concurrency", int),
    "ATELIER_TORCH_THREADS": ("torch_threads", int),
    "ATELIER_LOG_LEVEL": ("log_level", str),
}

_POSITIVE = {"port", "max_upload_mb", "max_image_pixels", "max_output_size", "lease_seconds",
             "heartbeat_seconds", "progress_interval", "max_attempts", "worker_concurrency",
             "max_files_per_field", "max_job_pixels", "max_form_parts", "dataset_max_side", "dataset_max_files"}


#: How a setting whose parser is not a plain type is written, for error messages.
_FORMATS = {"time_limits": "list of kind=seconds pairs (e.g. style_transfer=600,cyclegan_train=86400)"}


def _parse_limits(raw: str) -> dict[str, int]:
    """``kind=seconds,kind=seconds`` (e.g. ``style_transfer=600,cyclegan_train=86400``)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kind, sep, seconds = part.partition("=")
        if not sep or not kind.strip() or not seconds.strip().isdigit() or int(seconds) <= 0:
            raise ValueError(part)
        out[kind.strip()] = int(seconds)
    return out


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``), validating every value."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for var, (name, typ) in _SPEC.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            value: object = typ(raw)
        except ValueError:
            expected = _FORMATS.get(name, getattr(typ, "__name__", "value"))
            raise ConfigError(f"{var}={raw!r} is not a valid {expected}") from None
        if name in _POSITIVE and value <= 0:  # type: ignore[operator]
            raise ConfigError(f"{var}={raw!r} must be greater than 0")
        values[name] = value
    unknown = sorted(k for k in env if k.startswith("ATELIER_") and k not in _SPEC)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}; known settings: {', '.join(sorted(_SPEC))}")
    s = Settings(**values)  # type: ignore[arg-type]
    from core.schema import DEVICES

    if s.device not in DEVICES:
        raise ConfigError(f"ATELIER_DEVICE={s.device!r} must be one of {', '.join(DEVICES)}")
    if not 1 <= s.port <= 65535:
        raise ConfigError(f"ATELIER_PORT={s.port} must be between 1 and 65535")
    if s.database_url and not s.database_url.startswith(("sqlite", "postgresql")):
        raise ConfigError("ATELIER_DATABASE_URL must start with sqlite:// or postgresql+psycopg://")
    if s.broker_url and not s.broker_url.startswith(("redis://", "rediss://", "filesystem://", "amqp://", "memory://")):
        raise ConfigError("ATELIER_BROKER_URL must be redis://..., amqp://... or filesystem://")
    if s.vgg19_weights not in ("", "random") and not s.vgg19_weights.endswith((".pth", ".pt", ".safetensors")):
        raise ConfigError("ATELIER_VGG19_WEIGHTS must be empty (torchvision's weights), 'random', or a .pth/.safetensors path")
    if s.worker_max_memory_mb < 0:
        raise ConfigError(f"ATELIER_WORKER_MAX_MEMORY_MB={s.worker_max_memory_mb} must be 0 (no limit) or more")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("ATELIER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    return s

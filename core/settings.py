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
    # -- for programs (issue 12): Prefer: wait, event streams, webhooks ---------------------------------
    max_wait_seconds: int = 60  # the longest `Prefer: wait=N` honoured (RFC 7240); at most 60
    max_streams: int = 64  # requests held open at once (event streams + waits); `serve` adds threads for them
    stream_max_seconds: int = 600  # an event stream ends after this; EventSource reconnects with Last-Event-ID
    webhook_secret: str = ""  # signs deliveries of jobs without an owner; "" = <data dir>/webhook_secret
    public_url: str = ""  # the base of URLs in webhook payloads; "" = http://HOST:PORT
    log_format: str = "text"  # "text" for people, "json" (one object per line) for log shippers
    web_workers: int = 1  # `atelier serve` processes: 1 = waitress (threads), more = gunicorn (gthread)
    metrics_cache_seconds: float = 5.0  # /metrics reads the tables at most this often per web process
    # -- identity (issue 12) -------------------------------------------------------------------------
    auth: str = "off"  # "off" | "on" | "off-i-know" (auth off on a non-loopback address, on purpose)
    secret_key: str = ""  # signs page sessions; "" = generated once and kept under data_dir
    # -- artifact storage and retention (issue 13) ---------------------------------------------------
    storage_url: str = ""  # file:///path or s3://bucket/prefix; "" = file storage under <data dir>/files
    s3_endpoint_url: str = ""  # "" = AWS; MinIO/Ceph: http(s)://host:port
    s3_region: str = ""
    s3_access_key_id: str = ""  # "" = boto3's usual chain (environment, ~/.aws, instance role)
    s3_secret_access_key: str = ""
    s3_addressing_style: str = "auto"  # path | virtual | auto
    storage_redirects: bool = False  # downloads answer 302 to a presigned URL where the backend has them
    presign_seconds: int = 300  # lifetime of a presigned download URL
    gc_interval: int = 0  # seconds between retention runs in a worker's monitor; 0 = never (run `atelier gc`)
    gc_older_than: int = 30 * 86400  # seconds: finished jobs' files older than this are removed by gc

    @property
    def auth_enabled(self) -> bool:
        """Bearer tokens on the API and a login on the pages (``ATELIER_AUTH=on``)."""
        return self.auth == "on"

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
    "ATELIER_MAX_WAIT_SECONDS": ("max_wait_seconds", int),
    "ATELIER_MAX_STREAMS": ("max_streams", int),
    "ATELIER_STREAM_MAX_SECONDS": ("stream_max_seconds", int),
    "ATELIER_WEBHOOK_SECRET": ("webhook_secret", str),
    "ATELIER_PUBLIC_URL": ("public_url", str),
    "ATELIER_LOG_FORMAT": ("log_format", lambda raw: raw.strip().lower()),
    "ATELIER_WEB_WORKERS": ("web_workers", int),
    "ATELIER_METRICS_CACHE_SECONDS": ("metrics_cache_seconds", float),
    "ATELIER_AUTH": ("auth", str),
    "ATELIER_SECRET_KEY": ("secret_key", str),
    "ATELIER_STORAGE_URL": ("storage_url", str),
    "ATELIER_S3_ENDPOINT_URL": ("s3_endpoint_url", str),
    "ATELIER_S3_REGION": ("s3_region", str),
    "ATELIER_S3_ACCESS_KEY_ID": ("s3_access_key_id", str),
    "ATELIER_S3_SECRET_ACCESS_KEY": ("s3_secret_access_key", str),
    "ATELIER_S3_ADDRESSING_STYLE": ("s3_addressing_style", lambda raw: raw.strip().lower()),
    "ATELIER_STORAGE_REDIRECTS": ("storage_redirects", lambda raw: parse_bool(raw)),
    "ATELIER_STORAGE_PRESIGN_SECONDS": ("presign_seconds", int),
    "ATELIER_GC_INTERVAL": ("gc_interval", lambda raw: parse_duration(raw)),
    "ATELIER_GC_OLDER_THAN": ("gc_older_than", lambda raw: parse_duration(raw)),
}

#: The values of ATELIER_AUTH: ``off-i-know`` is auth off on a non-loopback address, chosen knowingly.
AUTH_MODES = ("off", "on", "off-i-know")

_POSITIVE = {"port", "max_upload_mb", "max_image_pixels", "max_output_size", "lease_seconds",
             "heartbeat_seconds", "progress_interval", "max_attempts", "worker_concurrency",
             "max_files_per_field", "max_job_pixels", "max_form_parts", "dataset_max_side", "dataset_max_files",
             "web_workers"}


#: How a setting whose parser is not a plain type is written, for error messages.
_FORMATS = {"time_limits": "list of kind=seconds pairs (e.g. style_transfer=600,cyclegan_train=86400)",
            "storage_redirects": "boolean (on/off, true/false, 1/0)",
            "gc_interval": "duration (e.g. 3600, 90s, 30m, 6h, 30d)",
            "gc_older_than": "duration (e.g. 3600, 90s, 30m, 6h, 30d)"}

_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(raw: str) -> int:
    """``30d``, ``6h``, ``90m``, ``45s`` or plain seconds -> seconds (``ValueError`` otherwise)."""
    text = raw.strip().lower()
    unit = text[-1:] if text[-1:].isalpha() else ""
    number = text[:-1] if unit else text
    if unit not in _DURATION_UNITS or not number.isdigit():
        raise ValueError(raw)
    return int(number) * _DURATION_UNITS[unit]


def parse_bool(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _parse_limits(raw: str) -> dict[str, int]:
    """``kind=seconds,kind=seconds`` (e.g. ``style_transfer=600,cyclegan_train=86400``)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        kind, sep, seconds = part.partition("=")
        if not sep or not kind.strip() or not seconds.strip().isdigit() or int(seconds) <= 0:
            raise ValueError(part)
        out[kind.strip()] = int(seconds)
    return out


def _check_storage(s: Settings) -> None:
    """The storage URL and S3 settings, checked at start-up rather than at the first upload."""
    if s.storage_url:
        from core.storage import parse_storage_url

        try:
            parse_storage_url(s.storage_url)
        except ValueError as exc:
            raise ConfigError(f"ATELIER_STORAGE_URL={s.storage_url!r}: {exc}") from None
    if s.s3_addressing_style not in ("auto", "path", "virtual"):
        raise ConfigError(f"ATELIER_S3_ADDRESSING_STYLE={s.s3_addressing_style!r} must be path, virtual or auto")
    if s.s3_endpoint_url and not s.s3_endpoint_url.startswith(("http://", "https://")):
        raise ConfigError("ATELIER_S3_ENDPOINT_URL must start with http:// or https://")
    if bool(s.s3_access_key_id) != bool(s.s3_secret_access_key):
        raise ConfigError("ATELIER_S3_ACCESS_KEY_ID and ATELIER_S3_SECRET_ACCESS_KEY are set together (or neither)")
    if not 1 <= s.presign_seconds <= 7 * 86400:
        raise ConfigError(f"ATELIER_STORAGE_PRESIGN_SECONDS={s.presign_seconds} must be between 1 and 604800")
    if s.gc_interval < 0 or s.gc_older_than <= 0:
        raise ConfigError("ATELIER_GC_INTERVAL must be 0 (off) or more and ATELIER_GC_OLDER_THAN more than 0")


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
    if s.auth not in AUTH_MODES:
        raise ConfigError(f"ATELIER_AUTH={s.auth!r} must be one of {', '.join(AUTH_MODES)}")
    if s.secret_key and len(s.secret_key) < 32:
        raise ConfigError("ATELIER_SECRET_KEY must be at least 32 characters (e.g. python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))')")
    if not 0 <= s.max_wait_seconds <= 60:
        raise ConfigError(f"ATELIER_MAX_WAIT_SECONDS={s.max_wait_seconds} must be between 0 and 60")
    if not 1 <= s.max_streams <= 1000 or s.stream_max_seconds < 1:
        raise ConfigError("ATELIER_MAX_STREAMS must be between 1 and 1000 and ATELIER_STREAM_MAX_SECONDS at least 1")
    if s.public_url and not s.public_url.startswith(("http://", "https://")):
        raise ConfigError("ATELIER_PUBLIC_URL must start with http:// or https://")
    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("ATELIER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    if s.log_format not in ("text", "json"):
        raise ConfigError(f"ATELIER_LOG_FORMAT={s.log_format!r} must be text or json")
    if s.metrics_cache_seconds < 0:
        raise ConfigError(f"ATELIER_METRICS_CACHE_SECONDS={s.metrics_cache_seconds} must be 0 or more")
    _check_storage(s)
    return s

"""Configuration from the environment, with a safe embedded default.

Without any environment the app runs on a SQLite file in the instance folder, with a secret key, a signature key,
an audit key and a metrics token generated there on first run (never committed). Numbers that regulation does
not set (lock-out, idle timeout, password rules) are parameters here, not constants in code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
DEFAULT_INSTANCE_PATH = PROJECT_ROOT / "instance"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a whole number, got {raw!r}") from exc


def _instance_file(instance_path: Path, filename: str) -> str:
    """A secret kept by the operator in the instance folder (never generated, never in the repository)."""
    path = instance_path / filename
    return path.read_text().strip() if path.is_file() else ""


# The keys generated in the instance folder on first run (file name = Config field) and the variables that set them.
INSTANCE_KEYS = {"secret_key": "SECRET_KEY", "signature_key": "CELLFACTORY_SIGNATURE_KEY",
                 "audit_key": "CELLFACTORY_AUDIT_KEY", "metrics_token": "CELLFACTORY_METRICS_TOKEN"}
SMTP_SECURITY = ("none", "starttls", "tls")
LANGUAGES = ("it", "en")


def _env_language(name: str, default: str) -> str:
    raw = os.environ.get(name) or default
    if raw not in LANGUAGES:
        raise RuntimeError(f"{name} must be one of {', '.join(LANGUAGES)}, got {raw!r}")
    return raw


def _instance_secret(instance_path: Path, filename: str, make=lambda: secrets.token_hex(32)) -> str:
    """Read a key from the instance folder, generating it with `make` on first run (mode 0600)."""
    instance_path.mkdir(parents=True, exist_ok=True)
    key_file = instance_path / filename
    if not key_file.exists():
        # Written whole under another name, then linked into place: the workers of a server starting together all
        # read the one key that was linked first, never a half-written file.
        fd, temporary = tempfile.mkstemp(dir=instance_path, prefix=f".{filename}-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(make())
            try:
                os.link(temporary, key_file)
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links: created exclusively, then written
                with contextlib.suppress(FileExistsError):
                    exclusive = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(exclusive, "w") as handle:
                        handle.write(Path(temporary).read_text())
        finally:
            os.unlink(temporary)
    return key_file.read_text().strip()


def _optional_instance_secret(instance_path: Path, filename: str, make) -> str:
    """An instance key the app can do without (the metrics token: without it, only an administrator's session opens
    /metrics): an instance folder that cannot be written, where the other keys come from the environment, is no
    reason to refuse to start."""
    try:
        return _instance_secret(instance_path, filename, make)
    except OSError:
        return ""


@dataclass(frozen=True)
class Config:
    database_url: str
    secret_key: str
    signature_key: str
    instance_path: Path
    # Keys the audit trail's hash chain and its anchors (HMAC-SHA256); never stored in the database.
    audit_key: str = ""
    # The keys above that were read from files of the instance folder (the others came from the environment):
    # /healthz checks they are still there, since the next start reads them again.
    instance_key_files: tuple[str, ...] = ()
    # Append-only file of anchors of the chain's head (None: `anchors.jsonl` in the instance folder).
    anchor_file: Path | None = None
    # A commit that wrote audit entries also writes an anchor when the last one is older than this.
    anchor_interval_minutes: int = 5
    timezone: str = "Europe/Rome"
    # The language of pages, e-mails and PDFs where neither the person nor the site chose one: "it" or "en".
    language: str = "it"
    session_idle_minutes: int = 15
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    password_min_length: int = 12
    password_history: int = 5
    api_token_days: int = 90
    secure_cookies: bool = True
    # Reverse proxies in front of the app server, each adding the client's address to X-Forwarded-For, the scheme to
    # X-Forwarded-Proto and the host name to X-Forwarded-Host: their last `proxies` entries are trusted (0: the app
    # is reached directly and ignores those headers, which anyone could send).
    proxies: int = 0
    # The address people reach this installation at: printed in QR codes on certificates.
    public_url: str = "http://127.0.0.1:5000"
    testing: bool = False
    # The development server on one's own machine: a loopback public URL is allowed and HSTS is not forced.
    development: bool = False
    # Lower Argon2 cost is only for the test suite's speed; production keeps the library defaults.
    fast_password_hashing: bool = False
    # Alerts by e-mail: no SMTP host, no e-mail (alerts are still recorded and shown). The password comes from the
    # environment or the file `smtp_password` in the instance folder.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_security: str = "none"  # "starttls" (usually port 587), "tls" (implicit TLS, usually port 465) or "none"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_timeout_seconds: int = 10
    mail_sender: str = ""
    # Biovigilance: the competent authority that receives the reports of serious adverse reactions and events (in
    # Italy the Centro Nazionale Trapianti) and the deadlines counted from their discovery (biovigilance.services).
    vigilance_authority: str = "Centro Nazionale Trapianti (CNT)"
    vigilance_initial_hours: int = 24
    vigilance_sponsor_hours: int = 24
    vigilance_final_days: int = 90
    # The bearer token a Prometheus server scrapes /metrics with (no session needed); empty: only a signed-in
    # administrator may read the metrics.
    metrics_token: str = field(default="", repr=False)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.smtp_security not in SMTP_SECURITY:
            raise RuntimeError(f"CELLFACTORY_SMTP_SECURITY must be one of {', '.join(SMTP_SECURITY)}, "
                               f"got {self.smtp_security!r}")
        if self.smtp_host and not self.mail_sender:
            raise RuntimeError("CELLFACTORY_MAIL_SENDER (the From address of alerts) is required with an SMTP host")
        if self.mail_sender:
            from email_validator import EmailNotValidError, validate_email

            try:
                validate_email(self.mail_sender, check_deliverability=False)
            except EmailNotValidError as exc:
                raise RuntimeError(f"CELLFACTORY_MAIL_SENDER must be one e-mail address, got {self.mail_sender!r}: "
                                   f"{exc}") from exc
        if not self.smtp_host.isprintable() or " " in self.smtp_host:
            raise RuntimeError(f"CELLFACTORY_SMTP_HOST must be a host name, got {self.smtp_host!r}")
        if self.proxies < 0:
            raise RuntimeError(f"CELLFACTORY_PROXIES must be 0 or more, got {self.proxies}")
        if not 0 < self.smtp_port < 65536:
            raise RuntimeError(f"CELLFACTORY_SMTP_PORT must be a port number, got {self.smtp_port}")

    @property
    def mail_enabled(self) -> bool:
        return bool(self.smtp_host)

    @classmethod
    def from_env(cls, instance_path: Path | None = None) -> Config:
        instance = Path(os.environ.get("CELLFACTORY_INSTANCE", instance_path or DEFAULT_INSTANCE_PATH))
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'cellfactory.sqlite'}"
        if database_url.startswith("postgres://"):
            database_url = "postgresql+psycopg://" + database_url.removeprefix("postgres://")
        elif database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
        keys = {name: os.environ.get(variable) for name, variable in INSTANCE_KEYS.items()}
        metrics_token = keys["metrics_token"] or _optional_instance_secret(instance, "metrics_token",
                                                                           lambda: secrets.token_urlsafe(32))
        return cls(
            database_url=database_url,
            secret_key=keys["secret_key"] or _instance_secret(instance, "secret_key"),
            signature_key=keys["signature_key"] or _instance_secret(instance, "signature_key"),
            instance_path=instance,
            audit_key=keys["audit_key"] or _instance_secret(instance, "audit_key"),
            instance_key_files=tuple(name for name, value in keys.items()
                                     if not value and (name != "metrics_token" or (instance / name).is_file())),
            anchor_file=Path(os.environ["CELLFACTORY_ANCHOR_FILE"]) if os.environ.get("CELLFACTORY_ANCHOR_FILE")
            else None,
            anchor_interval_minutes=_env_int("CELLFACTORY_ANCHOR_MINUTES", 5),
            timezone=os.environ.get("CELLFACTORY_TZ", "Europe/Rome"),
            language=_env_language("CELLFACTORY_LANGUAGE", "it"),
            session_idle_minutes=_env_int("CELLFACTORY_SESSION_IDLE_MINUTES", 15),
            lockout_threshold=_env_int("CELLFACTORY_LOCKOUT_THRESHOLD", 5),
            lockout_minutes=_env_int("CELLFACTORY_LOCKOUT_MINUTES", 15),
            password_min_length=_env_int("CELLFACTORY_PASSWORD_MIN_LENGTH", 12),
            password_history=_env_int("CELLFACTORY_PASSWORD_HISTORY", 5),
            api_token_days=_env_int("CELLFACTORY_API_TOKEN_DAYS", 90),
            # Plain-HTTP development server on loopback cannot carry Secure cookies.
            secure_cookies=os.environ.get("CELLFACTORY_INSECURE_COOKIES", "") != "1",
            proxies=_env_int("CELLFACTORY_PROXIES", 0),
            public_url=os.environ.get("CELLFACTORY_PUBLIC_URL", "http://127.0.0.1:5000"),
            development=os.environ.get("CELLFACTORY_DEVELOPMENT", "") == "1",
            smtp_host=os.environ.get("CELLFACTORY_SMTP_HOST", ""),
            smtp_port=_env_int("CELLFACTORY_SMTP_PORT", 25),
            smtp_security=os.environ.get("CELLFACTORY_SMTP_SECURITY", "none"),
            smtp_user=os.environ.get("CELLFACTORY_SMTP_USER", ""),
            smtp_password=os.environ.get("CELLFACTORY_SMTP_PASSWORD") or _instance_file(instance, "smtp_password"),
            smtp_timeout_seconds=_env_int("CELLFACTORY_SMTP_TIMEOUT_SECONDS", 10),
            mail_sender=os.environ.get("CELLFACTORY_MAIL_SENDER", ""),
            vigilance_authority=os.environ.get("CELLFACTORY_VIGILANCE_AUTHORITY") or "Centro Nazionale Trapianti (CNT)",
            vigilance_initial_hours=_env_int("CELLFACTORY_VIGILANCE_INITIAL_HOURS", 24),
            vigilance_sponsor_hours=_env_int("CELLFACTORY_VIGILANCE_SPONSOR_HOURS", 24),
            vigilance_final_days=_env_int("CELLFACTORY_VIGILANCE_FINAL_DAYS", 90),
            metrics_token=metrics_token,
        )

    @property
    def anchor_path(self) -> Path:
        return Path(self.anchor_file) if self.anchor_file else Path(self.instance_path) / "anchors.jsonl"

    def with_overrides(self, **changes) -> Config:
        return replace(self, **changes)

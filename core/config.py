"""Node settings: the one place where environment variables and the TOML file are read.

Every setting has an environment variable ``AINODE_<NAME>`` (for example
``AINODE_AE_TITLE``) and the same key in the optional TOML file given with
``ainode --config node.toml`` (or ``AINODE_CONFIG``).  Environment variables
win over the file, the file over the defaults.  The names are a contract that
deploy files and scripts rely on: see the README's configuration table.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.routing import RoutingRule, default_rules

CONFIG_FILE_ENV = "AINODE_CONFIG"

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_DESTINATION = re.compile(
    r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@/]+):(?P<port>\d{1,5})(?P<options>(/[^/]*)*)$"
)
_HL7_DESTINATION = re.compile(r"^(?P<host>[^:@/]+):(?P<port>\d{1,5})(?P<tls>/tls)?$", re.IGNORECASE)
_CALLER = re.compile(r"^(?P<ae>[^@]{1,16})(?:@(?P<host>[^:@]+))?$")


def _validate_ae_title(value: str) -> str:
    value = value.strip()
    if not _AE_TITLE.match(value):
        raise ValueError(f"not a valid AE title (1-16 printable characters, no '\\'): {value!r}")
    return value


#: How a SEG encodes its segments: one bit plane per segment, or one label per pixel.
SegType = Literal["BINARY", "LABELMAP"]
SEG_TYPES: tuple[SegType, ...] = get_args(SegType)

#: What a destination can take: DICOM SEG, TID 1500 SR, Secondary Captures with the overlay
#: burned in, a Key Object Selection of the key images (and of the other objects it takes).
ResultFormat = Literal["seg", "sr", "sc", "kos"]
RESULT_FORMATS: tuple[ResultFormat, ...] = get_args(ResultFormat)
DEFAULT_FORMATS: list[ResultFormat] = ["seg", "sr"]

#: Suffixes of the ``AE@host:port`` form: what each one sets on a :class:`Destination`.
_DESTINATION_OPTIONS: dict[str, tuple[str, bool | str]] = {
    "tls": ("tls", True),
    "commit": ("commit", True),
    "binary": ("seg_type", "BINARY"),
    "labelmap": ("seg_type", "LABELMAP"),
}


class Destination(BaseModel):
    """A DICOM peer that receives the node's results (C-STORE SCP).

    ``seg_type`` is the kind of DICOM SEG this peer gets: ``BINARY`` (the
    default; what most viewers display) or ``LABELMAP`` (Label Map
    Segmentation Storage, DICOM 2024: smaller, for peers known to support it).
    ``str()`` gives the canonical ``AE@host:port[/tls][/labelmap]`` form, which
    deliveries store: the SEG type is part of a destination's identity.
    ``commit`` asks the peer for Storage Commitment (push model) of every
    result sent: a delivery is ``sent`` until the peer's report says
    ``committed`` or ``commit_failed``.
    """

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    seg_type: SegType = "BINARY"
    commit: bool = False
    formats: list[ResultFormat] = Field(default_factory=lambda: list(DEFAULT_FORMATS))

    _check_ae = field_validator("ae_title")(_validate_ae_title)

    @model_validator(mode="before")
    @classmethod
    def _labelmap_format(cls, data: Any) -> Any:
        """``seg-labelmap`` in ``formats`` is ``seg`` with ``seg_type = "LABELMAP"``."""
        if not isinstance(data, dict):
            return data
        formats = data.get("formats")
        names = formats.split("+") if isinstance(formats, str) else formats
        if isinstance(names, list) and "seg-labelmap" in [str(n).strip().lower() for n in names]:
            data = {**data, "seg_type": "LABELMAP"}
            data["formats"] = [
                "seg" if str(n).strip().lower() == "seg-labelmap" else n for n in names
            ]
        return data

    @field_validator("formats", mode="before")
    @classmethod
    def _canonical_formats(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split("+")
        if isinstance(value, list):
            wanted = {str(item).strip().lower() for item in value}
            if not wanted - {""}:
                raise ValueError("a destination takes at least one format")
            unknown = sorted(wanted - set(RESULT_FORMATS))
            if unknown:
                raise ValueError(f"unknown formats {unknown} (known: {list(RESULT_FORMATS)})")
            return [name for name in RESULT_FORMATS if name in wanted]
        return value

    @property
    def kos_variant(self) -> str | None:
        """What this destination's KOS references besides the key images (None: no KOS).

        ``seg+sr`` for a destination taking SEG, SR and KOS: its KOS points only
        at objects it holds, so destinations taking other formats get other KOS.
        """
        if "kos" not in self.formats:
            return None
        return "+".join(name for name in self.formats if name != "kos") or "images"

    @field_validator("seg_type", mode="before")
    @classmethod
    def _upper_seg_type(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port`` with optional suffixes, as in the environment.

        Suffixes (any order, case-insensitive): ``/tls`` for DICOM TLS,
        ``/commit`` for Storage Commitment, ``/labelmap`` or ``/binary`` for
        the SEG type (default BINARY), ``/formats=sc+sr+kos`` for the result
        formats (default ``seg+sr``), e.g. ``PACS@pacs:104/tls/commit``.
        """
        match = _DESTINATION.match(text.strip())
        if not match:
            raise ValueError(
                f"destination must look like AE@host:port[/tls][/commit][/labelmap][/formats=...]"
                f", got {text!r}"
            )
        values: dict[str, Any] = {}
        for option in match["options"].split("/")[1:]:
            name, _, given = option.partition("=")
            if name.lower() == "formats" and "formats" not in values:
                values["formats"] = given
                continue
            if option.lower() not in _DESTINATION_OPTIONS:
                known = ", ".join(f"/{name}" for name in _DESTINATION_OPTIONS)
                raise ValueError(f"unknown destination option /{option} in {text!r} ({known})")
            field, value = _DESTINATION_OPTIONS[option.lower()]
            if field in values:
                raise ValueError(f"destination {text!r} sets {field} twice")
            values[field] = value
        return cls(ae_title=match["ae"], host=match["host"], port=int(match["port"]), **values)

    def __str__(self) -> str:
        tls = "/tls" if self.tls else ""
        commit = "/commit" if self.commit else ""
        labelmap = "/labelmap" if self.seg_type == "LABELMAP" else ""
        formats = "" if self.formats == DEFAULT_FORMATS else f"/formats={'+'.join(self.formats)}"
        return f"{self.ae_title}@{self.host}:{self.port}{tls}{commit}{labelmap}{formats}"


class Hl7Destination(BaseModel):
    """A RIS or reporting worklist that takes ORU^R01 result messages over MLLP."""

    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False

    @classmethod
    def parse(cls, text: str) -> Hl7Destination:
        """Parse ``host:port[/tls]``, the form used in ``AINODE_HL7_DESTINATIONS``."""
        match = _HL7_DESTINATION.match(text.strip())
        if not match:
            raise ValueError(f"HL7 destination must look like host:port[/tls], got {text!r}")
        return cls(host=match["host"], port=int(match["port"]), tls=bool(match["tls"]))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{'/tls' if self.tls else ''}"


class AllowedCaller(BaseModel):
    """A calling AE title allowed to associate, optionally only from one host."""

    ae_title: str
    host: str | None = None

    _check_ae = field_validator("ae_title")(_validate_ae_title)

    @classmethod
    def parse(cls, text: str) -> AllowedCaller:
        """Parse ``AE`` or ``AE@host``, the form used in ``AINODE_ALLOWED_CALLERS``."""
        match = _CALLER.match(text.strip())
        if not match:
            raise ValueError(f"allowed caller must look like AE or AE@host, got {text!r}")
        return cls(ae_title=match["ae"], host=match["host"])


def _split_list(value: Any, parse: Any) -> Any:
    """Accept a comma-separated string (environment) or a list (TOML) of entries."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [parse(item) if isinstance(item, str) else item for item in value]
    return value


class Settings(BaseSettings):
    """Everything the node, the scheduler and the workers are configured with."""

    model_config = SettingsConfigDict(env_prefix="AINODE_", extra="ignore", toml_file=None)

    ae_title: str = "AINODE"
    host: str = "0.0.0.0"
    port: int = Field(default=11112, ge=0, le=65535)
    spool_dir: Path = Path("./var")
    database_url: str | None = None
    broker_url: str | None = None
    stability_seconds: float = Field(default=10.0, gt=0)
    destinations: Annotated[list[Destination], NoDecode] = Field(default_factory=list)
    allowed_callers: Annotated[list[AllowedCaller], NoDecode] = Field(default_factory=list)
    routing_rules: list[RoutingRule] = Field(default_factory=default_rules)

    max_pdu_size: int = Field(default=0, ge=0)
    network_timeout_seconds: float = 60.0
    acse_timeout_seconds: float = Field(default=10.0, gt=0)
    max_associations: int = Field(default=64, ge=1)
    worker_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["cpu", "gpu", "send"]
    )
    worker_concurrency: int = Field(default=1, ge=1)
    job_time_limit_seconds: int = Field(default=3600, ge=10)
    delivery_max_attempts: int = Field(default=6, ge=1)
    delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    delivery_backoff_max_seconds: float = Field(default=300.0, gt=0)
    commitment_timeout_seconds: float = Field(default=3600.0, gt=0)
    hl7_destinations: Annotated[list[Hl7Destination], NoDecode] = Field(default_factory=list)
    hl7_sending_facility: str = ""
    hl7_receiving_application: str = ""
    hl7_receiving_facility: str = ""
    hl7_ack_timeout_seconds: float = Field(default=10.0, gt=0)
    #: OBX-8 abnormal flag per finding (code meaning or code value, case-insensitive), e.g.
    #: ``{"Nodule" = "A"}``; a critical flag (AA, HH, LL) makes the order's priority stat.
    hl7_abnormal_flags: dict[str, str] = Field(default_factory=dict)
    recovery_interval_seconds: float = Field(default=60.0, gt=0)
    job_heartbeat_seconds: float = Field(default=30.0, gt=0)
    job_stale_seconds: float = Field(default=180.0, gt=0)
    job_requeue_seconds: float = Field(default=900.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1)
    log_level: str = "INFO"
    models_dir: Path | None = None
    inference_device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    gpu_jobs_per_device: int = Field(default=1, ge=1)
    prefetch: bool = True
    multi_series_wait_seconds: float = Field(default=300.0, ge=0)
    store_identifiers: bool = True

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None

    #: Real scanner DICOM the tests run on (skipped where absent); relative to the repository.
    real_data_dir: Path = Path("../shared/data/real")
    receiver_processes: int = Field(default=1, ge=1, le=64)

    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)
    web_enabled: bool = True
    web_secret_key: str | None = None
    web_session_hours: float = Field(default=12.0, gt=0)
    web_login_attempts: int = Field(default=5, ge=1)
    web_login_window_seconds: float = Field(default=300.0, gt=0)
    web_page_size: int = Field(default=50, ge=1, le=500)
    time_to_result_target_seconds: float = Field(default=300.0, gt=0)
    #: Seconds a rendered /metrics is served again to the scrapes that follow (0: never).
    metrics_cache_seconds: float = Field(default=10.0, ge=0)

    _check_ae = field_validator("ae_title")(_validate_ae_title)

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, value: Any) -> Any:
        return _split_list(value, Destination.parse)

    @field_validator("hl7_destinations", mode="before")
    @classmethod
    def _parse_hl7_destinations(cls, value: Any) -> Any:
        return _split_list(value, Hl7Destination.parse)

    @field_validator("allowed_callers", mode="before")
    @classmethod
    def _parse_callers(cls, value: Any) -> Any:
        return _split_list(value, AllowedCaller.parse)

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _parse_queues(cls, value: Any) -> Any:
        return _split_list(value, str.strip)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Settings:
        names = [rule.name for rule in self.routing_rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"routing rule names must be unique: {duplicates}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order of precedence: arguments, environment, TOML file, defaults."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @cached_property
    def spool_path(self) -> Path:
        """Absolute spool directory (received instances, results, embedded DB and broker)."""
        return self.spool_dir.expanduser().resolve()

    @property
    def incoming_dir(self) -> Path:
        """Where received instances are stored, one folder per study and series."""
        return self.spool_path / "incoming"

    @property
    def results_dir(self) -> Path:
        """Where result objects (SEG, SR) are written before they are sent."""
        return self.spool_path / "results"

    @property
    def models_path(self) -> Path:
        """Absolute models directory: ``AINODE_MODELS_DIR``, default ``<spool>/models``.

        Operator-supplied models (a folder per pipeline with ``pipeline.json``
        and weights, or the weights of a built-in model pipeline) live here;
        in the spool by default because the SCP and every worker share it.
        """
        if self.models_dir is None:
            return self.spool_path / "models"
        return self.models_dir.expanduser().resolve()

    @property
    def locks_dir(self) -> Path:
        """Lock files that limit concurrent GPU jobs per device across worker processes."""
        return self.spool_path / "locks"

    @property
    def seg_types(self) -> list[SegType]:
        """The SEG types a segmentation job builds: those its destinations take.

        Only BINARY unless a destination asks for LABELMAP, so the default
        costs nothing extra; BINARY too when no destination is configured
        (the results stay in the spool for a later replay).
        """
        wanted = {destination.seg_type for destination in self.destinations} or {"BINARY"}
        return [seg_type for seg_type in SEG_TYPES if seg_type in wanted]

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the spool directory."""
        return self.database_url or f"sqlite:///{self.spool_path / 'ainode.db'}"

    @property
    def tls_enabled(self) -> bool:
        """Whether the SCP speaks DICOM TLS (a certificate and key are configured)."""
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def uses_embedded_broker(self) -> bool:
        """True when no broker URL is set: the file-system broker under the spool is used."""
        return not self.broker_url

    @property
    def embedded_broker_dir(self) -> Path:
        """Folder of the embedded (kombu file-system) broker; survives restarts."""
        return self.spool_path / "broker"


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment and an optional TOML file.

    Parameters
    ----------
    config_file:
        TOML file; defaults to ``$AINODE_CONFIG`` when set.
    overrides:
        Values that win over both (used by tests and the CLI).
    """
    path = config_file or os.environ.get(CONFIG_FILE_ENV)
    if not path:
        return Settings(**overrides)
    toml_path = Path(path)
    if not toml_path.is_file():
        raise FileNotFoundError(f"configuration file not found: {toml_path}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=toml_path)

    return FileSettings(**overrides)

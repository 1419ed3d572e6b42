"""The configuration's models: frozen pydantic models, one per section. Keys are the YAML keys; attributes
keep the names the code reads (``max_age`` -> ``max_age_seconds``). Rules spanning keys are checked on the raw
mapping (``Model.prepare``), so they are reported with every field error, not only once the fields are valid.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    computed_field,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from backup_exporter.config import fields as f
from backup_exporter.config.age import checked_identity_file, recipient, recipients_in_file
from backup_exporter.core.errors import ConfigError
from backup_exporter.core.retention import RetentionPolicy
from backup_exporter.core.schedule import CronSchedule

DEFAULT_MAX_AGE_SECONDS = 8 * 3600
# A run longer than this is stopped (exit 124): a dump that hangs (a dead server, a stalled storage) must not
# hold its plan forever. Equal to the BackupTooOld threshold: a run that long leaves the plan too old anyway.
DEFAULT_TIMEOUT_SECONDS = 8 * 3600
ENGINES = ("auto", "mongodump", "native")
ACCESS_TIERS = ("Hot", "Cool", "Cold")
SECRET_FIELDS = frozenset({"connection_string", "sas_token", "password", "api_token"})
URI_FIELDS = frozenset({"mongodb_uri", "uri"})  # shown with the password masked
Problem = tuple[tuple[str | int, ...], str]  # (where below the section, message)


def _line(loc: tuple[str | int, ...], message: str) -> InitErrorDetails:
    """Return a pydantic line error carrying one of the project's messages as it is."""
    return InitErrorDetails(type=PydanticCustomError("config", "{message}", {"message": message}), loc=loc,
                            input=None)


class Model(BaseModel):
    """A frozen section without unknown keys, where a YAML null or "" means "not set"."""

    # Code may use attribute names (PlanConfig(max_age_seconds=60)); a file or the environment may not.
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    internal: ClassVar[frozenset[str]] = frozenset()  # set by the loader, never by input
    file_keys: ClassVar[tuple[str, ...]] = ()  # keys the loader consumes before validation
    keep_empty: ClassVar[frozenset[str]] = frozenset()  # here null means "present and empty"

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> list[Problem]:
        """Adjust the raw mapping in place (derived defaults); return the cross-key rules it breaks."""
        return []

    @classmethod
    def unknown_key(cls) -> str:
        """Return the message for a key this section does not have, listing those it has."""
        keys = [v.alias or k for k, v in cls.model_fields.items() if k not in cls.internal] + list(cls.file_keys)
        return f"unknown key (known keys: {', '.join(sorted(keys))})"

    @model_validator(mode="wrap")
    @classmethod
    def _every_error(cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo) -> Self:
        problems: list[Problem] = []
        if isinstance(data, dict) or data is None:
            data = {k: {} if v in (None, "") else v for k, v in (data or {}).items()
                    if k in cls.keep_empty or v not in (None, "")}
            if (info.context or {}).get("input"):  # a file or the environment: the documented keys only
                hidden = {k for k in data if k in cls.internal or (
                    k in cls.model_fields and cls.model_fields[k].alias not in (None, k))}
                problems = [((k,), cls.unknown_key()) for k in sorted(hidden)]
                data = {k: v for k, v in data.items() if k not in hidden}
            problems += cls.prepare(data)
        try:
            model = handler(data)
        except ValidationError as exc:
            lines = [_line(e["loc"], cls.unknown_key()) if e["type"] == "extra_forbidden" and len(e["loc"]) == 1
                     else InitErrorDetails(type=PydanticCustomError(e["type"], e["msg"], e.get("ctx")),
                                           loc=e["loc"], input=e["input"]) for e in exc.errors()]
            raise ValidationError.from_exception_data(cls.__name__, lines + [_line(*p) for p in problems]) from None
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, [_line(*p) for p in problems])
        return model


class StorageConfig(Model):
    type: Annotated[str, f.one_of("a storage type", ("azure", "local"))] = "azure"
    container: str = ""
    connection_string: f.ConnectionString | None = None
    account_url: f.AccountUrl | None = None
    sas_token: str | None = None
    path: Path | None = None
    block_size: f.BlockSize = 8 << 20
    max_concurrency: f.Positive = 4
    create_container: bool = False
    # The plan lock's lease period: how long a killed run keeps its plan locked (Azure allows 15-60 s).
    lease_seconds: Annotated[f.Number, f.between(15, 60)] = 60

    @computed_field  # type: ignore[prop-decorator]
    @property
    def use_identity(self) -> bool:
        """Return True when Azure is reached with DefaultAzureCredential (only account_url is given)."""
        return self.type == "azure" and bool(self.account_url and not self.sas_token and not self.connection_string)

    def describe(self) -> str:
        """Return where backups go, without secrets."""
        if self.type == "local":
            return f"local directory {self.path}"
        return f"azure://{f.account_of(self.connection_string, self.account_url)}/{self.container}"

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> list[Problem]:
        kind = raw.setdefault("type", "local" if raw.get("path") else "azure")
        if kind == "local":
            return [] if raw.get("path") else [(("path",), "is required for local storage (a directory)")]
        problems: list[Problem] = []
        if kind == "azure" and not raw.get("container"):
            problems.append((("container",), "is required for Azure storage (the blob container name)"))
        if kind == "azure" and not raw.get("connection_string") and not raw.get("account_url"):
            problems.append(((), "Azure storage needs connection_string, or account_url (with sas_token or a "
                                 "managed identity)"))
        return problems


class RestoreCheckConfig(Model):
    schedule: f.Cron | None = None
    uri: f.MongoUri | None = None

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> list[Problem]:
        if "schedule" in raw and "uri" not in raw:
            return [(("uri",), "is required when restore_check.schedule is set (a scratch MongoDB URI)")]
        return []


def _recipient_list(value: Any) -> Any:
    # BACKUP_AGE_RECIPIENTS, or a YAML string, holds recipients separated by commas or whitespace.
    return tuple(value.replace(",", " ").split()) if isinstance(value, str) else value


class EncryptionConfig(Model):
    """age encryption of a plan's archives: any recipient can decrypt; the identity is for reading back."""

    recipients: Annotated[tuple[Annotated[str, AfterValidator(recipient)], ...], BeforeValidator(_recipient_list),
                          AfterValidator(lambda v: tuple(dict.fromkeys(v)))] = ()
    recipients_file: Path | None = None  # its recipients are merged into `recipients`
    identity_file: Annotated[Path, PlainValidator(checked_identity_file), PlainSerializer(str)] | None = None

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> list[Problem]:
        problems: list[Problem] = []
        listed = _recipient_list(raw.get("recipients", ()))
        if isinstance(raw.get("recipients_file"), str):
            found, unreadable = recipients_in_file(Path(raw["recipients_file"]))
            problems += [(("recipients_file",), p) for p in unreadable]
            if isinstance(listed, list | tuple):
                raw["recipients"] = listed = (*listed, *found)
        if not listed and not problems:
            problems.append(((), "has no recipient: set recipients (age1...) or recipients_file, or remove the "
                                 "section to store unencrypted backups"))
        return problems


class RetentionSection(Model):
    """The `retention:` keys, read into core.retention.RetentionPolicy."""

    keep_last: f.Count | None = None
    keep_within: f.Period | None = None
    keep_daily: f.Count | None = None
    keep_weekly: f.Count | None = None
    keep_monthly: f.Count | None = None


def _retention(value: Any) -> RetentionPolicy:
    if isinstance(value, RetentionPolicy):
        return value
    return RetentionPolicy(**dict(RetentionSection.model_validate(value)))


Retention = Annotated[RetentionPolicy, PlainValidator(_retention), PlainSerializer(
    lambda p: RetentionSection(**vars(p)).model_dump(exclude_none=True))]


class PlanConfig(Model):
    """One backup plan. Its schedules are always in its `timezone` (a CronSchedule given is re-read in it)."""

    internal = frozenset({"name"})
    keep_empty = frozenset({"encryption"})  # `encryption:` left empty is an error, never plain text

    name: str = ""
    mongodb_uri: f.MongoUri = Field(default="", validate_default=True)
    timezone: f.TimeZoneName = "UTC"  # before the schedules: they are read in it
    schedule: f.Cron = Field(default=f.DEFAULT_SCHEDULE, validate_default=True)
    prefix: Annotated[str, AfterValidator(lambda v: v.strip("/"))] = ""
    engine: Annotated[str, f.one_of("an engine", ENGINES)] = "auto"
    mongodump_path: str = "mongodump"
    mongodump_args: f.MongodumpArgs = ()
    include: f.Names = ()
    exclude: f.Names = ()
    max_age_seconds: f.Seconds = Field(default=float(DEFAULT_MAX_AGE_SECONDS), alias="max_age")
    connect_timeout_seconds: f.Seconds = Field(default=10.0, alias="connect_timeout")
    timeout_seconds: f.Seconds | None = Field(default=float(DEFAULT_TIMEOUT_SECONDS), alias="timeout")  # exit 124
    retention: Retention = RetentionPolicy()
    restore_check: RestoreCheckConfig = RestoreCheckConfig()
    compression_level: Annotated[f.Count, f.between(0, 3)] = 1  # ISA-L gzip level
    parallel_collections: Annotated[f.Count, f.between(1, 16)] = 4  # native engine readers
    mongodump_compress: bool = False  # true: mongodump --gzip; false: backupctl gzips the archive stream
    encryption: EncryptionConfig | None = None
    access_tier: Annotated[str, f.one_of("an access tier", ACCESS_TIERS, capitalize=True)] | None = None

    @field_validator("schedule", "restore_check")
    @classmethod
    def _in_plan_timezone(cls, value: Any, info: ValidationInfo) -> Any:
        zone = info.data.get("timezone", "UTC")  # absent when invalid: reported at 'timezone' alone
        if isinstance(value, CronSchedule):
            return f.cron(value, zone)
        if isinstance(value, RestoreCheckConfig) and value.schedule is not None:
            return value.model_copy(update={"schedule": f.cron(value.schedule, zone)})
        return value


class ServerConfig(Model):
    listen: f.Listen = f.parse_listen(f.DEFAULT_LISTEN)
    api_token: str | None = None
    max_parallel_runs: f.Positive = 2
    grace_period_seconds: f.Seconds = Field(default=10.0, alias="grace_period")
    status_refresh_seconds: f.Seconds = Field(default=30.0, alias="status_refresh")

    @property
    def listen_host(self) -> str:
        return self.listen[0]

    @property
    def listen_port(self) -> int:
        return self.listen[1]


class PushConfig(Model):
    url: f.HttpUrl | None = None
    job: str = "mongodb-backup"
    grouping_key: f.Labels = Field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout_seconds: f.Seconds = Field(default=10.0, alias="timeout")
    textfile: str | None = None

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> list[Problem]:
        return [] if ("cert_file" in raw) == ("key_file" in raw) else [((), "cert_file and key_file go together")]


class Config(Model):
    internal = frozenset({"source"})
    file_keys = ("defaults",)

    storage: StorageConfig
    plans: Mapping[f.PlanName, PlanConfig] = Field(default_factory=dict, validate_default=True)
    server: ServerConfig = ServerConfig()
    pushgateway: PushConfig = PushConfig()
    log_format: Annotated[str, f.one_of("a log format", ("text", "json"))] = "text"
    source: str = "environment"

    @field_validator("plans")
    @classmethod
    def _named(cls, plans: Mapping[str, PlanConfig]) -> Mapping[str, PlanConfig]:
        if not plans:
            raise ValueError("at least one plan is required")
        return {name: plan.model_copy(update={"name": name}) for name, plan in plans.items()}

    def plan(self, name: str | None) -> PlanConfig:
        """Return the named plan, or the only plan when name is None. Raises ConfigError."""
        if name is None:
            if len(self.plans) == 1:
                return next(iter(self.plans.values()))
            raise ConfigError([f"several plans are configured ({', '.join(self.plans)}): choose one with --plan"])
        if name not in self.plans:
            raise ConfigError([f"no plan named '{name}' (configured: {', '.join(self.plans) or 'none'})"])
        return self.plans[name]

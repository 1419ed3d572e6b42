"""Configuration: a YAML file with named plans, or the environment alone for a single-plan sidecar.

models (pydantic models, one per section), fields (value types), age (recipients, identity files),
messages (pydantic errors -> one line each, with the path), load (files, ${VAR}, defaults), environment
(environment-only mode), masking (check-config's view without secrets).
"""

from backup_exporter.config.environment import DEFAULT_PLAN, VARIABLES, from_environment
from backup_exporter.config.fields import DEFAULT_LISTEN, DEFAULT_SCHEDULE, PLAN_NAME_RE, parse_listen, parse_size
from backup_exporter.config.load import from_mapping, interpolate, load, load_file
from backup_exporter.config.masking import masked
from backup_exporter.config.models import (
    ACCESS_TIERS,
    DEFAULT_MAX_AGE_SECONDS,
    ENGINES,
    SECRET_FIELDS,
    Config,
    EncryptionConfig,
    PlanConfig,
    PushConfig,
    RestoreCheckConfig,
    ServerConfig,
    StorageConfig,
)
from backup_exporter.core.errors import ConfigError

__all__ = [
    "ACCESS_TIERS", "DEFAULT_LISTEN", "DEFAULT_MAX_AGE_SECONDS", "DEFAULT_PLAN", "DEFAULT_SCHEDULE", "ENGINES",
    "PLAN_NAME_RE", "SECRET_FIELDS", "VARIABLES", "Config", "ConfigError", "EncryptionConfig",
    "PlanConfig", "PushConfig", "RestoreCheckConfig", "ServerConfig", "StorageConfig", "from_environment",
    "from_mapping", "interpolate", "load", "load_file", "masked", "parse_listen", "parse_size",
]

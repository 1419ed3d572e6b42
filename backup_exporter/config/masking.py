"""The configuration as plain data with every secret masked, keyed as in the YAML file (for check-config)."""

from __future__ import annotations

from typing import Any

from backup_exporter.config.models import SECRET_FIELDS, URI_FIELDS, Config
from backup_exporter.core.redact import MASK, mask_uri


def masked(config: Config) -> dict[str, Any]:
    """Return the configuration as YAML-safe data with every secret masked."""
    def mask(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: MASK if k in SECRET_FIELDS and v else mask_uri(v) if k in URI_FIELDS and v else mask(v)
                    for k, v in data.items()}
        return [mask(v) for v in data] if isinstance(data, list) else data

    result = mask(config.model_dump(mode="json", by_alias=True))
    assert isinstance(result, dict)
    return result

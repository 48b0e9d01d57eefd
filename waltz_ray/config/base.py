"""The base of every config section, and the error every invalid config raises."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names every bad field and what it allows."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    _retired: ClassVar[dict[str, str]] = {}
    """Field names this section no longer has -> why (renamed or refused), so an old YAML file fails naming them."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_retired(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, why in cls._retired.items():
                if name in data:
                    raise ValueError(why)
        return data

"""API keys for the server: read from an environment variable or a file, held and compared only as SHA-256 digests.

The driver reads the keys and hands the deployments their digests, so no key ends up in Ray's deployment metadata.
Comparison is constant-time (``hmac.compare_digest``) and visits every key, so timing says nothing about the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from waltz_ray.config import ServeConfig


class AuthConfigError(ValueError):
    """The server's key configuration is unusable (no key where one is required, an unreadable key file)."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def read_keys(config: ServeConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Accepted keys: ``$<api_key_env>`` (comma-separated) plus ``api_key_file`` (one per line, ``#`` comments)."""
    environ = dict(os.environ) if environ is None else environ
    keys = [k.strip() for k in environ.get(config.api_key_env, "").split(",")]
    if config.api_key_file:
        path = Path(config.api_key_file).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise AuthConfigError(f"cannot read serve.api_key_file {str(path)!r}: {exc.strerror}") from None
        keys += [line.split("#", 1)[0].strip() for line in lines]
    keys = [k for k in keys if k]
    bad = [i for i, k in enumerate(keys) if any(c.isspace() or not c.isprintable() for c in k)]
    if bad:
        raise AuthConfigError(f"API key number {bad[0] + 1} contains whitespace or unprintable characters")
    if not keys and config.require_api_key:
        source = f"${config.api_key_env}" + (f" or {config.api_key_file}" if config.api_key_file else "")
        raise AuthConfigError(
            f"no API key: put one or more in {source} (or set serve.api_key_file), "
            "or serve without authentication with --set serve.require_api_key=false"
        )
    return keys


class KeyChecker:
    """Checks ``Authorization: Bearer <key>`` against the accepted keys' digests; no digests means no auth."""

    def __init__(self, digests: Sequence[bytes]) -> None:
        self.digests = tuple(digests)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def allows(self, authorization: str | None) -> bool:
        if not self.digests:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = digest(token.strip())
        match = False
        for stored in self.digests:  # no early exit: every key is compared
            match |= hmac.compare_digest(presented, stored)
        return match

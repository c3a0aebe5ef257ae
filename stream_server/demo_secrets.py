"""Demo mode keeps its generated API key and JWT secret in ``<var_dir>/demo-secrets.json`` (mode 0600),
so a restart of ``mllmdr-server --demo`` does not invalidate the tokens it handed out.

Configured values (``MLLMDR_API_KEY`` / ``MLLMDR_JWT_SECRET``) win and are never written to the file.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from mllmdr_core.errors import ConfigError
from stream_server.settings import Settings

DEMO_SECRETS_FILE = "demo-secrets.json"


def _read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); delete it to make new demo secrets") from exc
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"{path} is not a JSON object of strings; delete it to make new demo secrets")
    return data


def _write(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    os.replace(tmp, path)


def with_demo_secrets(settings: Settings) -> Settings:
    """``settings`` with the demo API key and JWT secret from the data directory (made and stored the
    first time); unchanged outside demo mode."""
    if not settings.demo:
        return settings
    path = settings.var_path / DEMO_SECRETS_FILE
    stored = _read(path)
    wanted = {
        "api_key": not settings.api_key,
        "jwt_secret": not settings.jwt_secret,
    }
    keep = {name: stored.get(name) or _new(name) for name, needed in wanted.items() if needed}
    if keep and keep != {k: stored.get(k) for k in keep}:
        _write(path, {**stored, **keep})
    elif path.exists() and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    try:
        return settings.model_validate({**settings.model_dump(), **keep})
    except ValueError as exc:  # e.g. a hand-edited, too-short secret in the file
        raise ConfigError(f"invalid demo secrets in {path}: {exc}; delete it to make new ones") from exc


def _new(name: str) -> str:
    return "demo-" + secrets.token_urlsafe(18) if name == "api_key" else secrets.token_urlsafe(32)

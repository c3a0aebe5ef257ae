"""The project's small exception tree.

Every error that crosses a module boundary is an ``MllmdrError`` with a stable ``code``; the server turns
it into an ``error`` event with that code, never a dead session::

    MllmdrError                 code "internal"
    ├── ConfigError             "config_invalid"       bad or inconsistent configuration
    ├── BundleError             "bundle_invalid"       missing file, hash mismatch, unreadable bundle
    ├── FeatureSpecError        "feature_spec_mismatch" bundle wants features the extractors cannot make
    ├── MediaError              "media_invalid"        undecodable or unusable audio/video
    ├── AuthError               "auth_failed"          missing, forged, expired or out-of-scope token
    ├── ProtocolError           "protocol_error"       malformed wire message or SDP
    ├── BackendError            "backend_unavailable"  LLM backend down, timed out or misconfigured
    │   └── UnsupportedDecodingError                        the backend cannot decode as the bundle asks
    ├── OutputParseError        "output_unparsed"      model text held no score (callers fall back)
    ├── StorageError            "storage_error"        database unwritable (disk full, read-only)
    └── DatasetError            "dataset_invalid"      dataset file missing or malformed (names file:line)
"""

from __future__ import annotations


class MllmdrError(Exception):
    """Base of all project errors; ``code`` is stable and goes on the wire."""

    code: str = "internal"


class ConfigError(MllmdrError):
    code = "config_invalid"


class BundleError(MllmdrError):
    code = "bundle_invalid"


class FeatureSpecError(MllmdrError):
    code = "feature_spec_mismatch"


class MediaError(MllmdrError):
    code = "media_invalid"


class AuthError(MllmdrError):
    code = "auth_failed"


class ProtocolError(MllmdrError):
    code = "protocol_error"


class BackendError(MllmdrError):
    code = "backend_unavailable"


class UnsupportedDecodingError(BackendError):
    """The bundle asks for a decoding the backend does not implement (e.g. grounded decoding on vLLM)."""


class OutputParseError(MllmdrError):
    code = "output_unparsed"


class StorageError(MllmdrError):
    code = "storage_error"


class DatasetError(MllmdrError):
    code = "dataset_invalid"

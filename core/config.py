"""The repository config: a versioned, write-once document recording how the repository stores data."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from .chunking import ChunkerParams
from .errors import CorruptObjectError, UnsupportedFormatError, UsageError
from .objects import HASH_ALGORITHM, utc_now

CONFIG_KEY = "config"
FORMAT = "dacflow-repository"
VERSION = 1
COMPRESSIONS = ("none", "zstd")
DEFAULT_PACK_SIZE = 32 * 1024 * 1024


@dataclass(frozen=True)
class RepoConfig:
    """What a reader must know to read the repository; unknown versions are refused."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    version: int = VERSION
    hash: str = HASH_ALGORITHM
    chunker: ChunkerParams = field(default_factory=ChunkerParams)
    compression: str = "none"
    compression_level: int = 1
    pack_size: int = DEFAULT_PACK_SIZE
    created: str = field(default_factory=utc_now)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise UsageError(f"unknown compression {self.compression!r}; choose one of {', '.join(COMPRESSIONS)}")
        if self.pack_size < 1:
            raise UsageError("pack size must be positive")
        if self.chunker.problem():
            raise UsageError(self.chunker.problem())

    @property
    def level(self) -> int | None:
        """The zstd level for data chunks, or None when chunks are stored raw."""
        return self.compression_level if self.compression == "zstd" else None

    def encode(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "id": self.id,
            "hash": self.hash,
            "chunker": self.chunker.to_json(),
            "compression": {"algorithm": self.compression, "level": self.compression_level},
            "pack_size": self.pack_size,
            "created": self.created,
            "extra": self.extra,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> RepoConfig:
        try:
            doc = json.loads(data)
            fmt, version = doc.get("format"), doc.get("version")
        except (ValueError, AttributeError):
            raise CorruptObjectError(f"repository config at {where} is not valid JSON", key=CONFIG_KEY) from None
        if fmt != FORMAT:
            raise CorruptObjectError(f"{where} is not a dacflow repository (format {fmt!r})", key=CONFIG_KEY)
        if not isinstance(version, int) or version > VERSION or version < 1:
            raise UnsupportedFormatError(
                f"repository at {where} has format version {version!r}; this dacflow reads version {VERSION} "
                "(upgrade dacflow to open it)",
                version=version,
            )
        if doc.get("hash") != HASH_ALGORITHM:
            raise UnsupportedFormatError(f"repository at {where} uses hash {doc.get('hash')!r}; dacflow knows blake3")
        try:
            comp = doc["compression"]
            return cls(
                id=str(doc["id"]),
                version=version,
                hash=doc["hash"],
                chunker=ChunkerParams.from_json(doc["chunker"]),
                compression=comp["algorithm"],
                compression_level=int(comp["level"]),
                pack_size=int(doc["pack_size"]),
                created=str(doc.get("created", "")),
                extra=dict(doc.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptObjectError(f"repository config at {where} is missing or has a bad field: {exc}") from None

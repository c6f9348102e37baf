"""Content-defined chunking (FastCDC 2020) with the parameters a repository records in its config.

Chunk boundaries depend only on content, so an insert shifts boundaries near it and nowhere else; equal
content in any file, version or branch yields equal chunks and is stored once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

import pyfastcdc

from .errors import UnsupportedFormatError

ALGORITHM = "fastcdc2020"


@dataclass(frozen=True, slots=True)
class ChunkerParams:
    """FastCDC parameters; the real average chunk is about `avg_size + min_size` (pyfastcdc's convention)."""

    min_size: int = 64 * 1024
    avg_size: int = 128 * 1024
    max_size: int = 1024 * 1024
    normalization: int = 1
    seed: int = 0
    algorithm: str = ALGORITHM

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> ChunkerParams:
        params = cls(**doc)  # type: ignore[arg-type]
        if params.algorithm != ALGORITHM:
            raise UnsupportedFormatError(
                f"repository uses chunking algorithm {params.algorithm!r}; this dacflow knows {ALGORITHM!r}"
            )
        problem = params.problem()
        if problem:
            raise UnsupportedFormatError(f"repository config: {problem}")
        return params

    def problem(self) -> str:
        """What is wrong with these parameters for FastCDC, or '' if nothing."""
        if not (64 <= self.min_size <= self.avg_size <= self.max_size):
            return (
                f"chunk sizes must satisfy 64 <= min <= avg <= max, got {self.min_size}/{self.avg_size}/{self.max_size}"
            )
        if not (256 <= self.avg_size <= 4 << 20 and 1024 <= self.max_size <= 16 << 20 and self.min_size <= 1 << 20):
            return "FastCDC needs 256 B <= avg <= 4 MiB, 1 KiB <= max <= 16 MiB and min <= 1 MiB"
        return ""

    def new(self) -> pyfastcdc.FastCDC:
        """A fresh chunker (FastCDC objects are not thread-safe: one per thread)."""
        return pyfastcdc.FastCDC(
            self.avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=self.normalization,  # type: ignore[arg-type]
            seed=self.seed,
        )


def iter_chunks(stream: BinaryIO, params: ChunkerParams) -> Iterator[memoryview]:
    """Yield the chunks of a stream; each view is valid only until the next one is produced."""
    for chunk in params.new().cut_stream(stream):
        yield chunk.data


def chunk_bytes(data: bytes | memoryview, params: ChunkerParams) -> Iterator[memoryview]:
    """Yield the chunks of an in-memory buffer."""
    if len(data) == 0:
        return
    for chunk in params.new().cut_buf(data):
        yield chunk.data


#: Bytes read per window by `file_chunks`; at least twice the largest chunk, so interior chunks are final.
WINDOW = 8 << 20


def file_chunks(fd: int, params: ChunkerParams, window: int = WINDOW) -> Iterator[memoryview]:
    """Yield the chunks of an open file, reading it window by window with `pread` (no mmap: a file truncated
    under us must give a short read, not SIGBUS). The boundaries are exactly those of chunking the whole file
    at once: a window's last chunk may be cut short by the window's end, so the next window starts where that
    chunk starts (re-reading at most one chunk).

    Each view stays valid for as long as it is referenced (each window is its own bytes object)."""
    window = max(window, 4 * params.max_size)
    cdc = params.new()
    pos = 0
    while True:
        data = os.pread(fd, window, pos)
        eof = len(data) < window
        if not data:
            return
        chunks = list(cdc.cut_buf(data))
        if not eof:
            pos += chunks.pop().offset
        for chunk in chunks:
            yield chunk.data
        if eof:
            return

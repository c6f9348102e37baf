"""Content-defined chunking (properties, locality, dedup) and the name validators of core/names.py."""

from __future__ import annotations

import io
import posixpath
import random
import statistics
import sys
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import blake3
import pytest
from conftest import write_tree
from dacflow import InvalidRefNameError, Repository, UnsafePathError
from dacflow.chunking import ChunkerParams, chunk_bytes, iter_chunks
from dacflow.names import (
    MAX_NAME_BYTES,
    MAX_REF_BYTES,
    MAX_TREE_DEPTH,
    META_DIR,
    check_name,
    check_names,
    check_ref_name,
    split_path,
)
from dacflow.refs import Refs
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chunks(data: bytes, params: ChunkerParams) -> list[bytes]:
    return [bytes(c) for c in chunk_bytes(data, params)]


@st.composite
def params(draw: st.DrawFn) -> ChunkerParams:
    """Any parameters a repository may record (within pyfastcdc's bounds), small so data spans many chunks."""
    min_size = draw(st.integers(64, 2048))
    avg_size = draw(st.integers(max(256, min_size), 8192))
    max_size = draw(st.integers(max(1024, avg_size), 32768))
    p = ChunkerParams(min_size, avg_size, max_size, draw(st.integers(0, 3)), draw(st.integers(0, 2**32 - 1)))
    assert ChunkerParams.from_json(p.to_json()) == p
    return p


def random_bytes(seed: int, n: int) -> bytes:
    return blake3.blake3(seed.to_bytes(8, "little")).digest(length=n) if n else b""


contents = st.one_of(
    st.binary(max_size=6000),  # hypothesis' own: short, repetitive, zero-heavy
    st.builds(random_bytes, st.integers(0, 2**63), st.integers(0, 120_000)),  # high entropy, many chunks
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=40), st.integers(1, 3000)),  # periodic
)


class ShortReads(io.RawIOBase):
    """A stream that returns at most a few bytes per read, like a pipe or a slow network file."""

    def __init__(self, data: bytes, step: int) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self._buf.read(min(len(b), self._step))
        b[: len(data)] = data
        return len(data)


# -- chunking properties -------------------------------------------------------------------------------------
@FAST
@given(data=contents, p=params())
@example(data=b"", p=SMALL)
@example(data=bytes(5000), p=SMALL)
@example(data=random_bytes(63, 4000), p=ChunkerParams(101, 256, 1024, 0))  # first chunk: 100 bytes (odd min)
def test_chunks_concatenate_to_the_input_within_bounds(data: bytes, p: ChunkerParams) -> None:
    parts = chunks(data, p)
    assert b"".join(parts) == data
    assert all(parts), "no empty chunk"
    assert all(len(c) <= p.max_size for c in parts)
    # pyfastcdc starts looking for a cut at min_size rounded down to even (it hashes two bytes per step):
    # with an odd min_size (never the default) a chunk can be min_size - 1 bytes.
    floor = p.min_size - p.min_size % 2
    assert all(len(c) >= floor for c in parts[:-1]), [len(c) for c in parts]
    if 0 < len(data) <= p.min_size:
        assert parts == [data]


@FAST
@given(data=contents, p=params(), step=st.integers(1, 5000))
def test_chunking_is_deterministic_for_buffers_and_streams(data: bytes, p: ChunkerParams, step: int) -> None:
    first = chunks(data, p)
    assert chunks(data, p) == first
    assert chunks(data, ChunkerParams.from_json(p.to_json())) == first  # as reopened from the config
    assert [bytes(c) for c in iter_chunks(io.BytesIO(data), p)] == first
    assert [bytes(c) for c in iter_chunks(ShortReads(data, step), p)] == first  # reads of any size


@FAST
@given(
    seed=st.integers(0, 2**63),
    n=st.integers(2000, 60_000),
    at=st.floats(0, 1),
    insert=st.binary(min_size=1, max_size=3),
    p=params(),
)
def test_an_edit_leaves_every_chunk_before_it_alone(
    seed: int, n: int, at: float, insert: bytes, p: ChunkerParams
) -> None:
    """A cut depends only on its chunk's bytes and the one byte after it (pyfastcdc hashes two bytes per
    step): every chunk that ends before an edit is unchanged."""
    data = random_bytes(seed, n)
    offset = int(at * n)
    before = chunks(data, p)
    after = chunks(data[:offset] + insert + data[offset:], p)
    end = 0
    for i, c in enumerate(before):
        end += len(c)
        if end >= offset:
            break
        assert after[i] == c


def test_default_chunker_bounds_are_exact(rng: random.Random) -> None:
    """With the repository's (even) default sizes every chunk but the last is within [min, max] exactly."""
    p = ChunkerParams()
    for data in (random_bytes(rng.randrange(1 << 62), 24 << 20), bytes(3 * p.max_size + 5)):
        lengths = [len(c) for c in chunk_bytes(data, p)]
        assert sum(lengths) == len(data)
        assert all(p.min_size <= n <= p.max_size for n in lengths[:-1]) and 0 < lengths[-1] <= p.max_size


def test_one_byte_insert_into_64mib_changes_few_chunks(rng: random.Random) -> None:
    params = ChunkerParams()  # the repository default
    seed = rng.randrange(1 << 62)
    data = random_bytes(seed, 64 << 20)
    old = {blake3.blake3(c).digest() for c in chunk_bytes(data, params)}
    assert len(old) > 300
    changed = []
    for _ in range(15):
        offset = rng.randrange(len(data) + 1)
        new = data[:offset] + bytes([rng.randrange(256)]) + data[offset:]
        changed.append(sum(blake3.blake3(c).digest() not in old for c in chunk_bytes(new, params)))
    print(f"64 MiB, seed {seed}: new chunks per 1-byte insert {sorted(changed)}", file=sys.stderr)
    assert statistics.median(changed) <= 3
    assert max(changed) <= 5
    assert min(changed) >= 1  # the chunk holding the new byte is new


# -- dedup through snapshots ---------------------------------------------------------------------------------
def test_content_defined_dedup_across_files(tmp_path: Path, rng: random.Random) -> None:
    repo = Repository.init(str(tmp_path / "repo"), compression="none")
    c = repo.config.chunker
    a = rng.randbytes(4 << 20)
    src = tmp_path / "src"
    write_tree(src, {"a.bin": a})
    first = repo.snapshot(str(src)).stats
    assert first["bytes_new"] == len(a) and first["chunks_reused"] == 0

    def add(name: str, data: bytes) -> dict:
        (src / name).write_bytes(data)
        stats = repo.snapshot(str(src), use_cache=False).stats
        assert repo.read_file("main", name) == data
        return stats

    s = add("copy.bin", a)  # the same content under another name: nothing new
    assert s["bytes_new"] == 0 and s["chunks_new"] == 0
    s = add("twice.bin", a + a)  # appended to itself: only the chunks around the seam are new
    assert s["chunks_new"] <= 3 and s["bytes_new"] <= 3 * c.max_size
    assert s["bytes_reused"] >= 3 * len(a)  # a.bin, copy.bin, and most of twice.bin
    s = add("prefixed.bin", rng.randbytes(1000) + a)  # new bytes in front
    # FastCDC resynchronises within a chunk or two after a prefix (296 of 300 seeds: 1 chunk, max 3), but with
    # minimum-size skipping a rare seed takes a few more (seen: 5); bound it loosely, the point is "not all".
    assert s["chunks_new"] <= 8 and s["bytes_new"] <= 8 * c.max_size
    s = add("cut.bin", a[: 3 << 20])  # a prefix
    assert s["chunks_new"] <= 1 and s["bytes_new"] <= c.max_size
    middle = len(a) // 2
    s = add("edited.bin", a[:middle] + b"EDIT" + a[middle:])
    assert s["chunks_new"] <= 3 and s["bytes_new"] <= 3 * c.max_size

    packed = sum(p.stat().st_size for p in (tmp_path / "repo" / "packs").rglob("*") if p.is_file())
    assert packed < len(a) + 12 * c.max_size  # about one copy of `a`, although ~22 MiB were snapshotted
    other = repo.snapshot(str(src), branch="other", use_cache=False).stats  # the same tree on another branch
    assert other["bytes_new"] == 0


# -- names: path elements ------------------------------------------------------------------------------------
VALID_NAMES = [
    "a",
    "a.txt",
    "...",
    ".hidden",
    "..x",
    "x..",
    "-",
    "~",
    "a b",
    "caf\u00e9",
    "cafe\u0301",
    "日本",
    "\U0001f600",
    "a" * MAX_NAME_BYTES,
    "é" * (MAX_NAME_BYTES // 2),
    ".dacflowx",
    "dacflow",
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("\x7f", "control character"),
        ("a\x85b", "control character"),
        (".", "relative step"),
        ("..", "relative step"),
        ("a/b", "separator"),
        ("/", "separator"),
        ("/etc", "separator"),
        ("a\\b", "separator"),
        ("a\x00b", "NUL"),
        (META_DIR, "metadata folder"),
        ("a" * (MAX_NAME_BYTES + 1), "longer than"),
        ("é" * 128, "longer than"),  # 128 characters, 256 bytes
        ("a\nb", "control"),
        ("\t", "control"),
        ("\x1b[2J", "control"),
        ("bad\udcff", "UTF-8"),
    ],
)
def test_check_name_refuses(name: str, why: str) -> None:
    with pytest.raises(UnsafePathError, match=why) as info:
        check_name(name, where="tree 1234")
    assert info.value.name == name and "tree 1234" in str(info.value)


@pytest.mark.parametrize("value", [None, 1, b"bytes", ["a"]])
def test_check_name_refuses_non_strings(value: object) -> None:
    with pytest.raises(UnsafePathError, match="not a string"):
        check_name(value)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
@example("..")
@example(".dacflow")
@example("\udcff")
def test_an_accepted_name_is_one_safe_path_element(name: str) -> None:
    try:
        assert check_name(name) == name
    except UnsafePathError:
        return
    raw = name.encode("utf-8")  # never raises for an accepted name
    assert 0 < len(raw) <= MAX_NAME_BYTES
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert name not in (".", "..", META_DIR)
    assert all(ord(ch) >= 32 for ch in name)
    # As a path it stays one element directly below the root.
    assert split_path(name) == [name]
    assert posixpath.normpath(posixpath.join("/root", name)) == "/root/" + name


safe_chars = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=safe_chars, min_size=1, max_size=80))
def test_ordinary_names_are_not_refused(name: str) -> None:
    assume(name not in (".", "..", META_DIR) and len(name.encode()) <= MAX_NAME_BYTES)
    assert check_name(name) == name


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=safe_chars, min_size=1, max_size=40))
def test_unicode_twins_are_refused_together(name: str) -> None:
    nfc, nfd = unicodedata.normalize("NFC", name), unicodedata.normalize("NFD", name)
    assume(nfc not in (".", "..", META_DIR) and max(len(nfc.encode()), len(nfd.encode())) < MAX_NAME_BYTES)
    if nfc != nfd:
        with pytest.raises(UnsafePathError, match="another Unicode form"):
            check_names([nfc, nfd])
    with pytest.raises(UnsafePathError, match="twice"):
        check_names([nfc, "other-name", nfc])
    check_names([nfc, nfc + "2"])  # different names pass


def test_check_names_examples() -> None:
    check_names([])
    check_names(["a", "b", "caf\u00e9"])
    # é two ways; Å three ways (Angstrom sign, precomposed, A + ring).
    for twins in (["caf\u00e9", "cafe\u0301"], ["\u212b", "\u00c5"], ["\u00c5", "A\u030a"]):
        with pytest.raises(UnsafePathError):
            check_names(twins)
    with pytest.raises(UnsafePathError, match="'x'"):
        check_names(["x", "y", "x"])
    with pytest.raises(UnsafePathError, match="empty"):
        check_names(["ok", ""])


def test_split_path() -> None:
    assert split_path("") == [] and split_path("/") == [] and split_path("//") == []
    assert split_path("a/b/c") == ["a", "b", "c"]
    assert split_path("/a//b/") == ["a", "b"]
    for bad in ("a/../b", "./a", "a/.", "..", "a/.dacflow/b", "a\\b", "a/\x00", "x/\ny"):
        with pytest.raises(UnsafePathError):
            split_path(bad)
    # The deepest path a snapshot can hold: MAX_TREE_DEPTH directories and a name in the last one.
    assert len(split_path("/".join(["d"] * (MAX_TREE_DEPTH + 1)))) == MAX_TREE_DEPTH + 1
    with pytest.raises(UnsafePathError, match="deeper"):
        split_path("/".join(["d"] * (MAX_TREE_DEPTH + 2)))


# -- names: refs ---------------------------------------------------------------------------------------------
VALID_REFS = ["main", "feature/x", "v1.0", "release-2024_01", "a/b/c", "_private", "0", "x.lock.y", "A" * MAX_REF_BYTES]
INVALID_REFS = [
    "",
    ".hidden",
    "a/.b",
    "a..b",
    "a//b",
    "a/",
    "/a",
    "a.",
    "a.lock",
    "-x",
    "a b",
    "a\x00",
    "a~1",
    "a^",
    "a:b",
    "a?",
    "a*",
    "a[",
    "a\\b",
    "@",
    "é",
    "A" * (MAX_REF_BYTES + 1),
    "a/b/",
    "x\n",
    "main\n",
    "a\tb",
]


@pytest.mark.parametrize("name", VALID_REFS)
def test_check_ref_name_accepts(name: str) -> None:
    assert check_ref_name(name) == name


@pytest.mark.parametrize("name", INVALID_REFS)
def test_check_ref_name_refuses(name: str) -> None:
    with pytest.raises(InvalidRefNameError):
        check_ref_name(name, "tag")


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.text(max_size=60), st.text(alphabet="ab0_-./~^:@ \x00\n", max_size=30)))
@example("main")
@example("a/b")
def test_an_accepted_ref_name_is_safe(name: str) -> None:
    try:
        check_ref_name(name)
    except InvalidRefNameError:
        return
    assert name and len(name.encode()) <= MAX_REF_BYTES
    assert name.isascii() and all(ch.isalnum() or ch in "._-/" for ch in name)
    assert ".." not in name and "//" not in name and "\x00" not in name
    assert not name.startswith(("/", "-", ".")) and not name.endswith(("/", ".", ".lock"))
    assert not any(part.startswith(".") or part == "" for part in name.split("/"))
    key = Refs.key("branches", name)  # one flat store key per ref, whatever '/' it holds
    assert key.count("/") == 2 and unquote(key.rsplit("/", 1)[1]) == name


def test_ref_names_refused_by_the_repository(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    for bad in ("../escape", "a/../../b", ".git", "x.lock", ""):
        with pytest.raises(InvalidRefNameError):
            repo.create_branch(bad)
        with pytest.raises(InvalidRefNameError):
            repo.tag(bad, "main")
    assert sorted(repo.branches()) == ["main"] and repo.tags() == {}
    assert not list((tmp_path / "repo").rglob("*escape*"))

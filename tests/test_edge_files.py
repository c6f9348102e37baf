"""Edge cases round-trip byte-exact through snapshot -> checkout: sizes at chunk boundaries, empty files and
directories, unicode names, modes, deep nesting, and a 2 GiB file streamed in bounded memory."""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest
from conftest import read_tree, write_tree
from dacflow import RefNotFoundError, Repository, UnsafePathError
from dacflow.names import MAX_TREE_DEPTH
from dacflow.objects import MODE_EXEC, MODE_FILE


def roundtrip(repo: Repository, src: Path, dest: Path) -> str:
    result = repo.snapshot(str(src), use_cache=False)
    assert result.created
    repo.checkout("main", str(dest))
    return result.commit


def listing(root: Path) -> dict[str, str]:
    """Every path below root with its type (file/dir/link), the metadata folder left out."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[0] == ".dacflow":
            continue
        out[rel] = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
    return out


# -- sizes ---------------------------------------------------------------------------------------------------
def edge_sizes(repo: Repository) -> list[int]:
    c = repo.config.chunker
    base = [0, 1, c.min_size, c.avg_size, c.avg_size + c.min_size, c.max_size, 2 * c.max_size]
    return sorted({max(0, n + d) for n in base for d in (-1, 0, 1)})


def test_sizes_at_chunk_boundaries_roundtrip(repo: Repository, tmp_path: Path, rng: random.Random) -> None:
    c = repo.config.chunker
    sizes = edge_sizes(repo)
    files: dict[str, bytes] = {}
    for n in sizes:
        files[f"random/{n:08d}.bin"] = rng.randbytes(n)
        files[f"zeros/{n:08d}.bin"] = bytes(n)  # no content-defined cut ever: only max-size cuts
    write_tree(tmp_path / "src", files)
    roundtrip(repo, tmp_path / "src", tmp_path / "dest")
    assert read_tree(tmp_path / "dest") == files

    for rel, data in files.items():
        entry = repo.entry("main", rel)
        fobj = repo.odb.get_file(entry.ref)
        lengths = [ch.size for ch in fobj.chunks]
        assert entry.size == fobj.size == sum(lengths) == len(data)
        assert all(1 <= n <= c.max_size for n in lengths)
        assert all(n >= c.min_size for n in lengths[:-1])
        if len(data) == 0:
            assert lengths == []
        elif len(data) <= c.min_size:
            assert lengths == [len(data)]
        if rel.startswith("zeros/") and data:
            q, r = divmod(len(data), c.max_size)
            assert lengths == [c.max_size] * q + ([r] if r else [])
        assert repo.read_file("main", rel) == data
    assert repo.check(read_data=True).ok


def test_empty_files_and_empty_tree(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"empty": b"", "d/also-empty": b"", "d/e/f/deep-empty": b""})
    (src / "d" / "also-empty").chmod(0o755)
    roundtrip(repo, src, tmp_path / "dest")
    assert read_tree(tmp_path / "dest") == {"empty": b"", "d/also-empty": b"", "d/e/f/deep-empty": b""}
    assert os.stat(tmp_path / "dest" / "d" / "also-empty").st_mode & 0o111
    assert repo.odb.get_file(repo.entry("main", "empty").ref).chunks == ()

    # An empty source directory is a valid (empty) snapshot too.
    (tmp_path / "nothing").mkdir()
    result = repo.snapshot(str(tmp_path / "nothing"))
    assert result.created
    repo.checkout("main", str(tmp_path / "dest2"))
    assert listing(tmp_path / "dest2") == {}


def test_empty_directories_are_preserved(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_tree(src, {"data/x.txt": b"x\n"})
    for rel in ("empty", "a/b/c", "data/empty-sibling", "only-dirs/x/y", "only-dirs/z"):
        (src / rel).mkdir(parents=True)
    roundtrip(repo, src, tmp_path / "dest")
    assert listing(tmp_path / "dest") == listing(src)
    assert listing(src)["a/b/c"] == "dir" and not any((tmp_path / "dest" / "a" / "b" / "c").iterdir())
    assert repo.entry("main", "only-dirs/x/y").kind == "dir"


# -- names ---------------------------------------------------------------------------------------------------
UNICODE_NAMES = [
    "emoji_\U0001f600\U0001f680.txt",
    "\U0001f9d1\u200d\U0001f4bb.bin",  # emoji ZWJ sequence
    "中文文件名.txt",
    "日本語/サブ/ファイル.csv",
    "한국어.txt",
    "caf\u00e9.txt",  # NFC
    "nai\u0308ve.txt",  # NFD (combining diaeresis): kept as is, not normalised
    "a\u0301\u0302\u0303stacked",  # several combining marks
    "Ωmega ≈ √2 ∑.dat",
    "with space and 'quotes' \"double\"",
    "rtl_\u202eexe.txt",
    "zero\u200bwidth",
    "...three dots",
    "-leading-dash",
    "é" * 127 + "x",  # 255 bytes of UTF-8: the longest allowed name
    "\U00010348 gothic",  # outside the BMP
]


def test_unicode_names_roundtrip_exactly(repo: Repository, tmp_path: Path) -> None:
    files = {name: name.encode("utf-8") * 3 for name in UNICODE_NAMES}
    assert len(("é" * 127 + "x").encode()) == 255
    write_tree(tmp_path / "src", files)
    roundtrip(repo, tmp_path / "src", tmp_path / "dest")
    assert read_tree(tmp_path / "dest") == files
    # The exact code points (bytes on disk), not a normalised form.
    on_disk = {os.fsencode(p.relative_to(tmp_path / "dest")) for p in (tmp_path / "dest").rglob("*")}
    for name in UNICODE_NAMES:
        assert name.encode("utf-8") in on_disk
    assert repo.read_file("main", "nai\u0308ve.txt") == files["nai\u0308ve.txt"]
    with pytest.raises(RefNotFoundError):  # the NFC spelling is a different (absent) name
        repo.read_file("main", "na\u00efve.txt")


# -- modes ---------------------------------------------------------------------------------------------------
def test_executable_bit_preserved(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    modes = {
        "run.sh": 0o755,
        "owner-only-exec": 0o700,
        "plain.txt": 0o644,
        "private.txt": 0o600,
        "group-exec": 0o654,
        "bin/tool": 0o775,
    }
    write_tree(src, {name: f"#!/bin/sh\necho {name}\n".encode() for name in modes})
    for name, mode in modes.items():
        (src / name).chmod(mode)
    roundtrip(repo, src, tmp_path / "dest")
    for name, mode in modes.items():
        executable = bool(mode & 0o111)
        assert repo.entry("main", name).mode == (MODE_EXEC if executable else MODE_FILE)
        got = os.stat(tmp_path / "dest" / name).st_mode
        assert stat.S_ISREG(got) and bool(got & stat.S_IXUSR) == executable, name
        assert (tmp_path / "dest" / name).read_bytes() == (src / name).read_bytes()

    # Flipping only the bit is a change that lands, and checks out.
    (src / "plain.txt").chmod(0o755)
    result = repo.snapshot(str(src))
    assert result.created
    assert [c.path for c in repo.diff("main~1", "main").modified] == ["plain.txt"]
    repo.checkout("main", str(tmp_path / "dest2"))
    assert os.stat(tmp_path / "dest2" / "plain.txt").st_mode & stat.S_IXUSR


# -- depth ---------------------------------------------------------------------------------------------------
def test_deep_nesting_roundtrips_up_to_the_limit(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    deepest = "/".join(["d"] * MAX_TREE_DEPTH)  # MAX_TREE_DEPTH directories below the root
    mid = "/".join(["d"] * 100)
    files = {f"{deepest}/leaf.txt": b"at the bottom\n", f"{mid}/middle.txt": b"in the middle\n", "top.txt": b"t\n"}
    write_tree(src, files)
    roundtrip(repo, src, tmp_path / "dest")
    assert read_tree(tmp_path / "dest") == files
    assert repo.read_file("main", f"{deepest}/leaf.txt") == b"at the bottom\n"

    # One level more is refused by snapshot (as checkout refuses it in a stored tree).
    (src / deepest / "d").mkdir()
    (src / deepest / "d" / "too-deep.txt").write_bytes(b"x")
    head = repo.head("main")
    with pytest.raises(UnsafePathError, match="deeper"):
        repo.snapshot(str(src))
    assert repo.head("main") == head


def test_many_files_in_one_directory(repo: Repository, tmp_path: Path, rng: random.Random) -> None:
    files = {f"many/{i:05d}.txt": rng.randbytes(rng.randrange(0, 300)) for i in range(500)}
    write_tree(tmp_path / "src", files)
    roundtrip(repo, tmp_path / "src", tmp_path / "dest")
    assert read_tree(tmp_path / "dest") == files


# -- a 2 GiB file in bounded memory --------------------------------------------------------------------------
BIG = 2 << 30
BLOCK = 1 << 20
RSS_LIMIT = 512 << 20

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from dacflow import Repository
    op, repo_url, a, b = sys.argv[1:5]
    repo = Repository.open(repo_url)
    t0 = time.perf_counter()
    if op == "snapshot":
        result = repo.snapshot(a, use_cache=False)
        out = {"commit": result.commit, "stats": result.stats}
    else:
        commit, stats = repo.checkout(a, b)
        out = {"commit": commit, "stats": stats.to_json()}
    out["seconds"] = time.perf_counter() - t0
    # VmHWM: this process's own peak. ru_maxrss would include the parent's RSS at spawn time (Linux keeps the
    # high-water mark across fork+exec), so a big pytest process made this child look big.
    with open("/proc/self/status") as f:
        hwm = [line for line in f if line.startswith("VmHWM:")]
    out["maxrss"] = int(hwm[0].split()[1]) * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(out))
    """
)


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_big_file(path: Path, seed: int) -> str:
    """2 GiB, made cheaply but not trivially: half the 1 MiB blocks are fresh pseudo-random bytes (BLAKE3 XOF
    keyed by block number), half are windows of one 8 MiB random base at shifting, unaligned offsets, so the
    chunker must find boundaries in real data and the store sees both new chunks and re-used ones. Returns the
    BLAKE3 of the whole file, computed while writing."""
    base = random.Random(seed).randbytes(8 << 20)
    whole = blake3.blake3()
    with open(path, "wb") as f:
        for i in range(BIG // BLOCK):
            if i % 2 == 0:
                block = blake3.blake3(f"{seed}:{i}".encode()).digest(length=BLOCK)
            else:
                off = (i * 7919 * 13 + i * i) % (len(base) - BLOCK)
                block = base[off : off + BLOCK]
            f.write(block)
            whole.update(block)
    return whole.hexdigest()


def hash_file(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


@pytest.fixture
def big_tmp(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards: pytest keeps the last runs' temp dirs, and these hold ~5 GiB."""
    yield tmp_path
    for name in ("src", "repo", "dest"):
        shutil.rmtree(tmp_path / name, ignore_errors=True)


@pytest.mark.slow
def test_2gib_file_streams_in_bounded_memory(big_tmp: Path, rng: random.Random) -> None:
    tmp_path = big_tmp
    src = tmp_path / "src"
    src.mkdir()
    t0 = time.perf_counter()
    digest = write_big_file(src / "big.bin", rng.randrange(1 << 30))
    made = time.perf_counter() - t0
    url = str(tmp_path / "repo")
    Repository.init(url)  # zstd level 1: fast enough (random data is stored raw after the attempt)

    snap = run_child("snapshot", url, str(src), "")
    assert snap["stats"]["bytes_total"] == BIG and snap["stats"]["bytes_hashed"] == BIG
    assert 0 < snap["stats"]["bytes_new"] < BIG  # the repeated half is partly deduplicated
    co = run_child("checkout", url, "main", str(tmp_path / "dest"))
    assert co["commit"] == snap["commit"] and co["stats"]["bytes"] == BIG

    out = tmp_path / "dest" / "big.bin"
    assert out.stat().st_size == BIG
    assert hash_file(out) == digest
    print(
        f"\n2 GiB: made in {made:.1f}s; snapshot {snap['seconds']:.1f}s peak RSS {snap['maxrss'] >> 20} MiB "
        f"({snap['stats']['bytes_new'] >> 20} MiB new); checkout {co['seconds']:.1f}s "
        f"peak RSS {co['maxrss'] >> 20} MiB",
        file=sys.stderr,
    )
    assert snap["maxrss"] < RSS_LIMIT, f"snapshot peak RSS {snap['maxrss'] >> 20} MiB"
    assert co["maxrss"] < RSS_LIMIT, f"checkout peak RSS {co['maxrss'] >> 20} MiB"

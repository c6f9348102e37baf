"""Damaged storage: bit rot, truncation and lost packs are found by `check` and never reach a reader.

Every repository here uses `pack_size=1`, so each object sits alone in its own pack and "damage one chunk" is
exact: flipping a bit, truncating or deleting that pack touches that chunk and nothing else.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import blake3
import pytest
import zstandard
from conftest import read_tree, write_tree
from dacflow import CorruptObjectError, ObjectNotFoundError, Repository
from dacflow.chunking import ChunkerParams
from dacflow.cli.main import main
from dacflow.objects import ChunkRef, Commit, FileObject, Tree, TreeEntry, hash_bytes, utc_now
from dacflow.odb import pack_key

# Small chunks keep the files small while still giving every file several chunks.
SMALL = ChunkerParams(min_size=512, avg_size=1024, max_size=4096)
DAMAGES = ("flip", "truncate", "delete")


# -- helpers -------------------------------------------------------------------------------------------------
def text_bytes(rng: random.Random, n: int) -> bytes:
    """Compressible but unique content (so zstd really compresses the chunks)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        label = rng.choice(["alpha", "beta", "gamma"])
        out += f"row {i:07d} value {rng.randrange(10**6):06d} label {label}\n".encode()
        i += 1
    return bytes(out[:n])


def make_files(rng: random.Random, compression: str) -> dict[str, bytes]:
    """Four files with distinct content: a damaged chunk belongs to exactly one file."""
    gen = (lambda n: text_bytes(rng, n)) if compression == "zstd" else rng.randbytes
    return {
        "a.bin": gen(12_000),
        "sub/b.bin": gen(10_000),
        "sub/deeper/c.txt": gen(8_000),
        "keep.txt": gen(6_000),
    }


def setup_repo(tmp_path: Path, rng: random.Random, compression: str) -> tuple[Repository, dict[str, bytes]]:
    repo = Repository.init(str(tmp_path / "repo"), pack_size=1, compression=compression, chunker=SMALL)
    files = make_files(rng, compression)
    write_tree(tmp_path / "src", files)
    repo.snapshot(str(tmp_path / "src"), message="data")
    assert repo.check(read_data=True).ok
    return repo, files


def chunks_of(repo: Repository, path: str) -> list[ChunkRef]:
    return list(repo.odb.get_file(repo.entry("main", path).ref).chunks)


def pack_path(repo: Repository, oid: str) -> Path:
    loc = repo.odb.locate(oid)
    assert loc is not None
    return Path(repo.store.root) / pack_key(loc.pack)  # type: ignore[attr-defined]


def stored_blob(repo: Repository, oid: str) -> bytes:
    loc = repo.odb.locate(oid)
    assert loc is not None
    return pack_path(repo, oid).read_bytes()[loc.offset : loc.offset + loc.length]


def decodes_to(blob: bytes, oid: str) -> bool:
    """Independent of dacflow: does this stored blob (codec byte + payload) still decode to the object?"""
    if not blob:
        return False
    try:
        if blob[0] == 0:
            raw = blob[1:]
        elif blob[0] == 1:
            raw = zstandard.ZstdDecompressor().decompress(blob[1:], max_output_size=1 << 30)
        else:
            return False
    except (zstandard.ZstdError, MemoryError):  # MemoryError: a damaged header claiming an absurd size
        return False
    return blake3.blake3(raw).hexdigest() == oid


def flip_bit(repo: Repository, oid: str, bit: int) -> None:
    """Flip bit number `bit` (0 = lowest bit of the codec byte) of the object's stored bytes in its pack."""
    loc = repo.odb.locate(oid)
    assert loc is not None and 0 <= bit < loc.length * 8
    path = pack_path(repo, oid)
    data = bytearray(path.read_bytes())
    data[loc.offset + bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))


def corrupt(repo: Repository, oid: str, rng: random.Random) -> int:
    """Flip one payload bit so that the object really no longer decodes to itself; return the bit."""
    loc = repo.odb.locate(oid)
    assert loc is not None
    for _ in range(100):
        bit = rng.randrange(8, loc.length * 8)  # payload only (the codec byte has its own test)
        flip_bit(repo, oid, bit)
        if not decodes_to(stored_blob(repo, oid), oid):
            return bit
        flip_bit(repo, oid, bit)  # a bit zstd does not look at: not damage; try another
    raise AssertionError("no damaging bit found")


def damage(repo: Repository, oid: str, how: str, rng: random.Random) -> None:
    loc = repo.odb.locate(oid)
    assert loc is not None
    path = pack_path(repo, oid)
    if how == "flip":
        corrupt(repo, oid, rng)
    elif how == "truncate":
        os.truncate(path, loc.offset + loc.length // 2)
    else:
        path.unlink()


def all_names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def run_cli(*args: str) -> tuple[int, dict]:
    """The real command in a child process: `python -m dacflow ARGS`; returns (exit code, JSON output)."""
    cmd = [sys.executable, "-m", "dacflow", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"exit {proc.returncode}, not JSON: {proc.stdout!r} {proc.stderr!r}") from None


def run_cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    """The same command in this process (saves the interpreter start-up)."""
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    try:
        return code, json.loads(captured.out)
    except ValueError:
        raise AssertionError(f"not JSON: {captured.out!r} (stderr {captured.err!r})") from None


def chunk_problems(problems: list[dict[str, str]]) -> dict[str, str]:
    """Object-level problems as id -> kind (a truncated pack is also reported as a pack; see the callers)."""
    return {p["id"]: p["kind"] for p in problems if p["what"] != "pack"}


# -- check finds exactly the damage --------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_check_reports_exactly_the_damaged_chunks(
    tmp_path: Path, rng: random.Random, compression: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, _ = setup_repo(tmp_path, rng, compression)
    url = str(tmp_path / "repo")
    code, healthy = run_cli_here(capsys, "--repo", url, "--json", "check", "--read-data")
    assert code == 0 and healthy["ok"] and healthy["problems"] == []

    flipped = chunks_of(repo, "a.bin")[1].id
    truncated = chunks_of(repo, "sub/b.bin")[-1].id
    deleted = chunks_of(repo, "sub/deeper/c.txt")[0].id
    assert len({flipped, truncated, deleted}) == 3
    truncated_pack = repo.odb.locate(truncated).pack  # type: ignore[union-attr]
    damage(repo, flipped, "flip", rng)
    damage(repo, truncated, "truncate", rng)
    damage(repo, deleted, "delete", rng)
    expected = {flipped: "corrupt", truncated: "corrupt", deleted: "missing"}

    # API, read data: exactly the three chunks, no more, no fewer.
    report = Repository.open(url).check(read_data=True)
    assert not report.ok
    assert chunk_problems([p.to_json() for p in report.problems]) == expected
    assert report.ids("corrupt") - {truncated_pack} == {flipped, truncated}
    assert report.ids("missing") == {deleted}
    # The only extra line allowed: the truncated pack itself (its trailer is gone), named by its own id.
    assert {p.id for p in report.problems if p.what == "pack"} <= {truncated_pack}
    assert report.files == 4 and report.packs > 0

    # API, structure only: the deleted chunk is missing; damaged content is not looked at.
    structural = Repository.open(url).check(read_data=False)
    assert {p.id: p.kind for p in structural.problems} == {deleted: "missing"}

    # CLI: same answer, and a non-zero exit.
    code, doc = run_cli("--repo", url, "--json", "check", "--read-data")
    assert code != 0 and doc["ok"] is False
    assert chunk_problems(doc["problems"]) == expected
    assert {p["id"] for p in doc["problems"] if p["what"] == "pack"} <= {truncated_pack}
    code, doc = run_cli_here(capsys, "--repo", url, "--json", "check")
    assert code != 0 and {p["id"]: p["kind"] for p in doc["problems"]} == {deleted: "missing"}


@pytest.mark.parametrize("how", DAMAGES)
def test_check_reports_each_damage_alone(tmp_path: Path, rng: random.Random, how: str) -> None:
    repo, _ = setup_repo(tmp_path, rng, "zstd")
    victim = chunks_of(repo, "sub/b.bin")[1].id
    damage(repo, victim, how, rng)
    report = Repository.open(repo.url).check(read_data=True)
    problems = [p.to_json() for p in report.problems]
    assert chunk_problems(problems) == {victim: "missing" if how == "delete" else "corrupt"}
    structural = Repository.open(repo.url).check()
    assert {p.id for p in structural.problems} == ({victim} if how == "delete" else set())


# -- no bad byte reaches a checkout or a reader -------------------------------------------------------------
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_checkout_of_damaged_file_leaves_no_bad_byte(
    tmp_path: Path, rng: random.Random, how: str, compression: str
) -> None:
    repo, files = setup_repo(tmp_path, rng, compression)
    chunks = chunks_of(repo, "sub/b.bin")
    assert len(chunks) >= 3
    damage(repo, chunks[len(chunks) // 2].id, how, rng)  # a middle chunk: earlier ones are fine
    error = ObjectNotFoundError if how == "delete" else CorruptObjectError

    dest = tmp_path / "dest"
    with pytest.raises(error, match="b.bin"):
        Repository.open(repo.url).checkout("main", str(dest))
    got = read_tree(dest)
    assert "sub/b.bin" not in got
    assert got == {k: v for k, v in files.items() if k != "sub/b.bin"}  # the rest is whole and exact
    assert not [n for n in all_names(dest) if "tmp" in n.rsplit("/", 1)[-1]], all_names(dest)

    # Over an existing checkout (force): the old version stays as it was, not half overwritten.
    old = tmp_path / "old"
    write_tree(old, {"sub/b.bin": b"OLD VERSION\n", "keep.txt": b"old keep\n"})
    with pytest.raises(error):
        Repository.open(repo.url).checkout("main", str(old), force=True)
    assert (old / "sub" / "b.bin").read_bytes() == b"OLD VERSION\n"
    assert (old / "keep.txt").read_bytes() == files["keep.txt"]
    assert not [n for n in all_names(old) if "tmp" in n.rsplit("/", 1)[-1]]

    with pytest.raises(error):
        Repository.open(repo.url).read_file("main", "sub/b.bin")
    assert Repository.open(repo.url).read_file("main", "a.bin") == files["a.bin"]


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_reads_through_a_flipped_bit_never_return_bad_bytes(
    tmp_path: Path, rng: random.Random, compression: str
) -> None:
    """Any one bit flipped anywhere in a stored chunk: the read raises or returns the exact original bytes."""
    repo, files = setup_repo(tmp_path, rng, compression)
    chunk = chunks_of(repo, "a.bin")[0]
    original = repo.odb.get_bytes(chunk.id)
    assert files["a.bin"].startswith(original)
    length = repo.odb.locate(chunk.id).length  # type: ignore[union-attr]
    if compression == "zstd":
        assert stored_blob(repo, chunk.id)[0] == 1  # really compressed
    # Codec byte, the first 17 payload bytes (all of a zstd frame header), the last 4 bytes, and random ones.
    bits = set(range(8 * 18)) | set(range(length * 8 - 32, length * 8))
    bits |= {rng.randrange(length * 8) for _ in range(64)}
    raised = 0
    for bit in sorted(bits):
        flip_bit(repo, chunk.id, bit)
        damaged = not decodes_to(stored_blob(repo, chunk.id), chunk.id)
        try:
            data = repo.odb.get_bytes(chunk.id)
        except CorruptObjectError as exc:
            assert exc.id == chunk.id
            raised += 1
            with pytest.raises(CorruptObjectError):
                repo.read_file("main", "a.bin")
        else:
            assert data == original, f"bit {bit} returned bad data"
            assert not damaged, f"bit {bit} damages the chunk but the read did not notice"
        flip_bit(repo, chunk.id, bit)
    if compression == "none":
        assert raised == len(bits)  # raw storage: every bit matters
    else:
        assert raised >= len(bits) * 0.9
    assert repo.read_file("main", "a.bin") == files["a.bin"]


def test_zstd_header_claiming_a_huge_size_is_corrupt_not_a_crash(tmp_path: Path, rng: random.Random) -> None:
    """One flipped bit in a zstd frame header can claim exabytes: a corrupt object, not a MemoryError."""
    repo, files = setup_repo(tmp_path, rng, "zstd")
    chunk = chunks_of(repo, "a.bin")[0]
    blob = stored_blob(repo, chunk.id)
    assert blob[0] == 1 and blob[1:5] == b"\x28\xb5\x2f\xfd" and not blob[5] & 0x80
    flip_bit(repo, chunk.id, 8 * 5 + 7)  # frame header descriptor: 2-byte content size becomes 8 bytes
    assert zstandard.frame_content_size(stored_blob(repo, chunk.id)[1:]) > 1 << 40

    with pytest.raises(CorruptObjectError):
        repo.odb.get_bytes(chunk.id)
    with pytest.raises(CorruptObjectError):
        repo.read_file("main", "a.bin")
    report = Repository.open(repo.url).check(read_data=True)
    assert chunk_problems([p.to_json() for p in report.problems]) == {chunk.id: "corrupt"}
    dest = tmp_path / "dest"
    with pytest.raises(CorruptObjectError):
        Repository.open(repo.url).checkout("main", str(dest))
    assert read_tree(dest) == {k: v for k, v in files.items() if k != "a.bin"}


def test_index_with_an_absurd_zstd_header_is_skipped_not_a_crash(tmp_path: Path, rng: random.Random) -> None:
    """A damaged pack index is skipped (its objects then show up as missing); opening never dies of it."""
    repo, _ = setup_repo(tmp_path, rng, "zstd")
    chunk = chunks_of(repo, "a.bin")[0]
    pack = repo.odb.locate(chunk.id).pack  # type: ignore[union-attr]
    index = Path(repo.store.root) / "index" / pack  # type: ignore[attr-defined]
    data = bytearray(index.read_bytes())
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    data[4] |= 0xC0  # content size field: 8 bytes, read from whatever follows
    index.write_bytes(bytes(data))
    assert zstandard.frame_content_size(bytes(data)) > 1 << 40

    fresh = Repository.open(repo.url)
    report = fresh.check(read_data=True)
    assert {p.id: p.kind for p in report.problems} == {chunk.id: "missing"}
    with pytest.raises(ObjectNotFoundError):
        fresh.read_file("main", "a.bin")


def test_reads_from_a_truncated_pack_raise(tmp_path: Path, rng: random.Random) -> None:
    repo, files = setup_repo(tmp_path, rng, "none")
    chunk = chunks_of(repo, "a.bin")[0]
    loc = repo.odb.locate(chunk.id)
    assert loc is not None
    path = pack_path(repo, chunk.id)
    whole = path.read_bytes()
    for size in (0, 1, loc.offset, loc.offset + 1, loc.offset + loc.length // 2, loc.offset + loc.length - 1):
        path.write_bytes(whole[:size])
        with pytest.raises(CorruptObjectError) as info:
            repo.odb.get_bytes(chunk.id)
        assert info.value.id == chunk.id
        with pytest.raises(CorruptObjectError):
            repo.read_file("main", "a.bin")
    path.write_bytes(whole[: loc.offset + loc.length])  # only the trailer gone: the chunk itself is whole
    assert repo.read_file("main", "a.bin") == files["a.bin"]


# -- damaged metadata ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["tree", "file", "commit"])
def test_corrupt_metadata_object_is_reported(
    tmp_path: Path, rng: random.Random, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, files = setup_repo(tmp_path, rng, "zstd")
    head = repo.head("main")
    assert head is not None
    oid = {
        "tree": repo.entry("main", "sub/deeper").ref,
        "file": repo.entry("main", "sub/b.bin").ref,
        "commit": head,
    }[target]
    corrupt(repo, oid, rng)

    for read_data in (False, True):
        report = Repository.open(repo.url).check(read_data=read_data)
        assert {p.id: p.kind for p in report.problems} == {oid: "corrupt"}, report.problems
    code, doc = run_cli_here(capsys, "--repo", repo.url, "--json", "check")
    assert code != 0 and {p["id"]: p["kind"] for p in doc["problems"]} == {oid: "corrupt"}

    fresh = Repository.open(repo.url)
    dest = tmp_path / "dest"
    with pytest.raises(CorruptObjectError):
        fresh.checkout("main", str(dest))
    victim = {"tree": "sub/deeper/c.txt", "file": "sub/b.bin", "commit": "a.bin"}[target]
    written = read_tree(dest) if dest.exists() else {}
    assert victim not in written
    assert all(files[k] == v for k, v in written.items())
    if target != "commit":
        with pytest.raises(CorruptObjectError):
            fresh.read_file("main", victim)
        assert fresh.read_file("main", "a.bin") == files["a.bin"]


def plant(repo: Repository, obj: FileObject | Tree | Commit) -> str:
    with repo.odb.writer() as w:
        return w.add_object(obj)


def test_file_object_lying_about_chunk_sizes_is_refused(tmp_path: Path) -> None:
    """A hash-valid file object whose chunk sizes do not match its chunks is corrupt: never written out."""
    repo = Repository.init(str(tmp_path / "repo"), pack_size=1)
    real = b"0123456789" * 100
    cid = hash_bytes(real)
    with repo.odb.writer() as w:
        w.add(cid, real, "c")
    # Claims 3 chunks of 10 bytes (30 bytes in all), but each chunk is 1000 bytes.
    liar = plant(repo, FileObject(30, (ChunkRef(cid, 10),) * 3))
    honest = plant(repo, FileObject(1000, (ChunkRef(cid, 1000),)))
    tree = plant(
        repo,
        Tree.of(
            [TreeEntry("liar.bin", "file", liar, 30, 0o100644), TreeEntry("ok.bin", "file", honest, 1000, 0o100644)]
        ),
    )
    head, token = repo.refs.read("branches", "main")
    commit = plant(repo, Commit(tree, (head,), "liar", "mallory", utc_now()))  # type: ignore[arg-type]
    repo.refs.swap("branches", "main", commit, token)

    with pytest.raises(CorruptObjectError):
        repo.read_file("main", "liar.bin")
    assert repo.read_file("main", "ok.bin") == real
    dest = tmp_path / "dest"
    with pytest.raises(CorruptObjectError, match="liar.bin"):
        repo.checkout("main", str(dest))
    assert read_tree(dest) == {"ok.bin": real}
    assert all_names(dest) == {"ok.bin"}

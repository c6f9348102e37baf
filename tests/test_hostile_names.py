"""Hostile trees and names: nothing a stored tree says can make checkout write outside its root.

Trees are planted directly in the object store (as a malicious writer with store access could), with a commit
on `main` pointing at them. Every checkout goes into `<sentinel>/co/dest`; afterwards the sentinel directory
must be exactly as it was apart from `co/dest`, and `co/dest` may hold only what the tree legitimately names.
"""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import pytest
from conftest import read_tree, write_tree
from dacflow import CorruptObjectError, RefNotFoundError, Repository, UnsafePathError, UsageError
from dacflow.names import MAX_TREE_DEPTH
from dacflow.objects import (
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    ChunkRef,
    Commit,
    FileObject,
    canonical_json,
    hash_bytes,
    utc_now,
)
from dacflow.trees import walk

PAYLOAD = b"PWNED by a hostile tree\n"
BENIGN = b"benign content\n"


# -- planting ------------------------------------------------------------------------------------------------
def plant_bytes(repo: Repository, data: bytes, kind: str = "m") -> str:
    oid = hash_bytes(data)
    with repo.odb.writer() as w:
        w.add(oid, data, kind)
    return oid


def plant_file(repo: Repository, content: bytes) -> str:
    """A genuine chunk and file object; return the file object id."""
    plant_bytes(repo, content, "c")
    fobj = FileObject(len(content), (ChunkRef(hash_bytes(content), len(content)),))
    return plant_bytes(repo, fobj.encode())


def plant_tree(repo: Repository, entries: list[list[object]], *, ascii_json: bool = False) -> str:
    """A tree object with exactly these entries, in exactly this order (no validation, no sorting)."""
    doc = {"type": "tree", "v": 1, "entries": entries}
    if ascii_json:  # needed for names that are not valid UTF-8 (lone surrogates)
        data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    else:
        data = canonical_json(doc)
    return plant_bytes(repo, data)


def point_main_at(repo: Repository, tree_id: str) -> str:
    head, token = repo.refs.read("branches", "main")
    cid = plant_bytes(repo, Commit(tree_id, (head,), "hostile", "mallory", utc_now()).encode())  # type: ignore[arg-type]
    repo.refs.swap("branches", "main", cid, token)
    return cid


def file_entry(repo: Repository, name: str, content: bytes = PAYLOAD) -> list[object]:
    return [name, "file", plant_file(repo, content), len(content), MODE_FILE]


def utf8_sorted(entries: list[list[object]]) -> list[list[object]]:
    return sorted(entries, key=lambda e: str(e[0]).encode("utf-8", "surrogatepass"))


# -- watching the filesystem ---------------------------------------------------------------------------------
def snapshot_fs(root: Path, skip: Path | None = None) -> dict[str, tuple[str, bytes | str | None]]:
    """Every path below root (not following links) with its type and content/target; `skip` excluded."""
    out: dict[str, tuple[str, bytes | str | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and here == skip:
            dirnames[:] = []
            continue
        for name in sorted(dirnames + filenames):
            p = here / name
            if skip is not None and p == skip:
                continue
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", None)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """(sentinel dir with some content, checkout destination two levels below it)."""
    sentinel = tmp_path / "sentinel"
    write_tree(sentinel, {"canary.txt": b"canary\n", "co/sibling.txt": b"sibling\n", "etc/passwd": b"root\n"})
    return sentinel, sentinel / "co" / "dest"


def all_paths(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def assert_contained(sentinel: Path, dest: Path, before: dict, allowed: set[str]) -> None:
    """Nothing outside dest changed; inside dest only `allowed` paths, and no payload anywhere else."""
    assert snapshot_fs(sentinel, skip=dest) == before
    extra = all_paths(dest) - allowed
    assert not extra, f"unexpected paths in the checkout: {extra}"
    for rel, (kind, content) in snapshot_fs(dest).items() if dest.exists() else []:
        assert not (kind == "file" and content == PAYLOAD and rel not in allowed)


# -- hostile names in a stored tree --------------------------------------------------------------------------
def hostile_single(sentinel: Path) -> dict[str, str]:
    return {
        "dotdot-slash": "../x",
        "dotdot-twice": "../../x",
        "absolute": str(sentinel / "abs-escape"),
        # "/etc/x" itself, but rooted in the sentinel: a regression must not write to the real /etc (as root).
        "absolute-etc": str(sentinel / "etc" / "x"),
        "climb": "a/../../b",
        "nested-slash": "a/b",
        "nul": "x\x00y",
        "empty": "",
        "metadata-dir": ".dacflow",
        "dot": ".",
        "dotdot": "..",
        "backslash": "..\\..\\x",
        "newline": "x\ny",
        "control": "bell\x07",
        "too-long": "n" * 256,
    }


SINGLE_CASES = list(hostile_single(Path("/")).keys())


@pytest.mark.parametrize("where", ["root", "nested"])
@pytest.mark.parametrize("case", SINGLE_CASES)
def test_hostile_name_is_refused_and_nothing_escapes(
    repo: Repository, arena: tuple[Path, Path], case: str, where: str
) -> None:
    sentinel, dest = arena
    name = hostile_single(sentinel)[case]
    bad_tree = plant_tree(repo, [file_entry(repo, name)])
    if where == "root":
        root = bad_tree
        allowed: set[str] = set()
    else:  # a benign file first, then a directory holding the hostile tree
        root = plant_tree(repo, [file_entry(repo, "a.txt", BENIGN), ["sub", "dir", bad_tree, 0, MODE_DIR]])
        allowed = {"a.txt", "sub"}
    point_main_at(repo, root)
    before = snapshot_fs(sentinel, skip=dest)

    with pytest.raises(UnsafePathError) as info:
        repo.checkout("main", str(dest))
    assert info.value.name == name
    assert_contained(sentinel, dest, before, allowed)
    if where == "nested":
        assert (dest / "a.txt").read_bytes() == BENIGN
        assert not any((dest / "sub").iterdir())
    # Same again over the partial checkout, with force: still refused, still contained.
    with pytest.raises(UnsafePathError):
        repo.checkout("main", str(dest), force=True)
    assert_contained(sentinel, dest, before, allowed)
    assert not os.path.lexists(sentinel / "abs-escape") and not os.path.lexists(sentinel / "co" / "x")
    assert not os.path.lexists(sentinel / "etc" / "x")

    # Reading refuses too: the tree is refused when it is read, whatever the caller wants from it.
    for read in (
        lambda: repo.read_file("main", "sub/x" if where == "nested" else "x"),
        lambda: list(walk(repo.odb, repo.get_commit("main").tree)),
        lambda: repo.diff("main~1", "main"),
    ):
        with pytest.raises(UnsafePathError):
            read()
    assert bad_tree in {p.id for p in repo.check().problems}


@pytest.mark.parametrize("kind", ["dir", "link"])
@pytest.mark.parametrize("name", ["..", "../escape", "a/../../escape", "/abs-escape", ".dacflow", ""])
def test_hostile_directory_and_link_names_are_refused(
    repo: Repository, arena: tuple[Path, Path], kind: str, name: str
) -> None:
    sentinel, dest = arena
    if name.startswith("/"):
        name = str(sentinel) + name
    if kind == "dir":
        entry: list[object] = [name, "dir", plant_tree(repo, [file_entry(repo, "payload")]), 0, MODE_DIR]
    else:
        entry = [name, "link", str(sentinel / "canary.txt"), 10, MODE_LINK]
    point_main_at(repo, plant_tree(repo, [file_entry(repo, "a.txt", BENIGN), entry]))
    before = snapshot_fs(sentinel, skip=dest)
    with pytest.raises(UnsafePathError):
        repo.checkout("main", str(dest))
    assert_contained(sentinel, dest, before, set())
    assert not any(p.is_symlink() for p in sentinel.rglob("*"))


def test_non_utf8_name_is_refused(repo: Repository, arena: tuple[Path, Path]) -> None:
    sentinel, dest = arena
    name = "bad\udcff"  # what os.fsdecode makes of the byte 0xff: not a valid UTF-8 name
    tree = plant_tree(repo, [file_entry(repo, name)], ascii_json=True)
    point_main_at(repo, tree)
    before = snapshot_fs(sentinel, skip=dest)
    with pytest.raises(UnsafePathError):
        repo.checkout("main", str(dest))
    assert_contained(sentinel, dest, before, set())


def nfc_nfd() -> tuple[str, str]:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", nfd) == nfc and nfc != nfd
    return nfc, nfd


@pytest.mark.parametrize("case", ["nfc-nfd-twins", "duplicate", "duplicate-dir-and-file", "unsorted"])
def test_tree_with_clashing_or_unsorted_names_is_refused(repo: Repository, arena: tuple[Path, Path], case: str) -> None:
    sentinel, dest = arena
    nfc, nfd = nfc_nfd()
    sub = plant_tree(repo, [file_entry(repo, "inner")])
    entries = {
        "nfc-nfd-twins": utf8_sorted([file_entry(repo, nfc, b"one\n"), file_entry(repo, nfd, b"two\n")]),
        "duplicate": [file_entry(repo, "x", b"one\n"), file_entry(repo, "x", b"two\n")],
        "duplicate-dir-and-file": [["x", "dir", sub, 0, MODE_DIR], file_entry(repo, "x", b"two\n")],
        "unsorted": [file_entry(repo, "b"), file_entry(repo, "a")],
    }[case]
    tree = plant_tree(repo, entries)
    point_main_at(repo, tree)
    before = snapshot_fs(sentinel, skip=dest)
    error = CorruptObjectError if case == "unsorted" else UnsafePathError
    with pytest.raises(error):
        repo.checkout("main", str(dest))
    with pytest.raises(error):
        repo.read_file("main", "a" if case == "unsorted" else "x")
    assert_contained(sentinel, dest, before, set())
    assert tree in {p.id for p in repo.check().problems}


def test_kind_confusion_is_refused(repo: Repository, arena: tuple[Path, Path]) -> None:
    """A 'file' entry naming a tree, or a 'dir' entry naming a file object, is corrupt, not followed."""
    sentinel, dest = arena
    sub = plant_tree(repo, [file_entry(repo, "inner")])
    fobj = plant_file(repo, PAYLOAD)
    for entries in ([["f", "file", sub, 1, MODE_FILE]], [["d", "dir", fobj, 1, MODE_DIR]]):
        point_main_at(repo, plant_tree(repo, entries))
        before = snapshot_fs(sentinel, skip=dest)
        with pytest.raises(CorruptObjectError):
            repo.checkout("main", str(dest), force=True)
        assert_contained(sentinel, dest, before, {"d"})
        assert not any(dest.rglob("*inner*"))


@pytest.mark.parametrize("suffix", ["\n", " ", "0"])
def test_malformed_object_id_in_a_tree_is_corrupt(repo: Repository, arena: tuple[Path, Path], suffix: str) -> None:
    """An entry ref that is not exactly 64 hex digits makes the tree corrupt (not a 'missing' object)."""
    sentinel, dest = arena
    fid = plant_file(repo, PAYLOAD)
    tree = plant_tree(repo, [["x", "file", fid + suffix, len(PAYLOAD), MODE_FILE]])
    point_main_at(repo, tree)
    before = snapshot_fs(sentinel, skip=dest)
    with pytest.raises(CorruptObjectError):
        repo.checkout("main", str(dest))
    with pytest.raises(CorruptObjectError):
        repo.read_file("main", "x")
    assert {p.id: p.kind for p in repo.check().problems} == {tree: "corrupt"}
    assert_contained(sentinel, dest, before, set())


@pytest.mark.parametrize("target", ["", "a\x00b"])
def test_link_with_impossible_target_is_refused(repo: Repository, arena: tuple[Path, Path], target: str) -> None:
    sentinel, dest = arena
    point_main_at(repo, plant_tree(repo, [["l", "link", target, len(target), MODE_LINK]]))
    before = snapshot_fs(sentinel, skip=dest)
    with pytest.raises(CorruptObjectError):
        repo.checkout("main", str(dest))
    assert_contained(sentinel, dest, before, set())


@pytest.mark.parametrize("depth", [257, 1500])
def test_tree_nested_too_deep_is_refused_not_a_crash(repo: Repository, arena: tuple[Path, Path], depth: int) -> None:
    """A chain of trees deeper than snapshot allows raises UnsafePathError (not RecursionError)."""
    sentinel, dest = arena
    tree = plant_tree(repo, [file_entry(repo, "bottom.txt")])
    with repo.odb.writer() as w:
        for _ in range(depth):
            data = canonical_json({"type": "tree", "v": 1, "entries": [["d", "dir", tree, 0, MODE_DIR]]})
            tree = hash_bytes(data)
            w.add(tree, data, "m")
    point_main_at(repo, tree)
    before = snapshot_fs(sentinel, skip=dest)
    with pytest.raises(UnsafePathError):
        repo.checkout("main", str(dest))
    assert snapshot_fs(sentinel, skip=dest) == before
    assert not any(dest.rglob("bottom.txt"))
    levels = max((len(p.relative_to(dest).parts) for p in dest.rglob("*")), default=0)
    assert levels <= MAX_TREE_DEPTH + 1  # the refused level may exist as an empty directory, no deeper


# -- symlinks ------------------------------------------------------------------------------------------------
def test_links_pointing_outside_are_stored_and_checked_out_as_links(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"), compression="none")
    outside = tmp_path / "outside"
    secret = os.urandom(4096)
    write_tree(outside, {"secret.bin": secret})
    src = tmp_path / "w" / "src"
    write_tree(src, {"real.txt": BENIGN})
    targets = {"etc": "/etc", "up": "../../outside", "abs_outside": str(outside), "dangling": "no/where"}
    for name, target in targets.items():
        os.symlink(target, src / name)
    assert (src / "up" / "secret.bin").read_bytes() == secret  # the link really leads outside

    repo.snapshot(str(src))
    for name, target in targets.items():
        entry = repo.entry("main", name)
        assert (entry.kind, entry.ref, entry.mode) == ("link", target, MODE_LINK)
    with pytest.raises(RefNotFoundError):  # never followed: nothing below a link is in the snapshot
        repo.entry("main", "up/secret.bin")
    packs = b"".join(p.read_bytes() for p in (tmp_path / "repo" / "packs").rglob("*") if p.is_file())
    assert secret[:64] not in packs and b"root:" not in packs

    before_outside = snapshot_fs(outside)
    dest = tmp_path / "w" / "co" / "dest"
    repo.checkout("main", str(dest))
    for name, target in targets.items():
        assert (dest / name).is_symlink() and os.readlink(dest / name) == target
    assert (dest / "real.txt").read_bytes() == BENIGN
    assert snapshot_fs(outside) == before_outside


def test_force_checkout_never_writes_through_planted_links(repo: Repository, tmp_path: Path) -> None:
    """Links planted in the destination where the tree has a directory or file are replaced, not followed."""
    outside = tmp_path / "outside"
    write_tree(outside, {"victim.txt": b"victim\n", "dir/keep.txt": b"keep\n"})
    src = tmp_path / "src"
    write_tree(src, {"d/x": PAYLOAD, "f.txt": PAYLOAD, "dirlink/keep.txt": PAYLOAD, "sub/y": BENIGN})
    repo.snapshot(str(src))

    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(outside), dest / "d")  # tree: directory d/ with file x
    os.symlink(str(outside / "victim.txt"), dest / "f.txt")  # tree: file f.txt
    os.symlink("../outside/dir", dest / "dirlink")  # tree: directory with a file of the same name as outside
    (dest / "sub").mkdir()
    os.symlink(str(outside / "victim.txt"), dest / "sub" / "y")  # a link one level down
    before_outside = snapshot_fs(outside)

    with pytest.raises(UsageError):
        repo.checkout("main", str(dest))  # not empty, no force: refused, nothing touched
    assert snapshot_fs(outside) == before_outside
    repo.checkout("main", str(dest), force=True)
    assert snapshot_fs(outside) == before_outside
    for rel in ("d", "dirlink", "sub"):
        assert not (dest / rel).is_symlink() and (dest / rel).is_dir()
    for rel in ("f.txt", "sub/y", "d/x", "dirlink/keep.txt"):
        assert not (dest / rel).is_symlink()
    assert read_tree(dest) == read_tree(src)


def test_checkout_over_a_stored_link_to_outside(repo: Repository, tmp_path: Path) -> None:
    """Commit A has link d -> outside; commit B has directory d/x. Checking out A then B (force) and back."""
    outside = tmp_path / "outside"
    write_tree(outside, {"existing.txt": b"outside\n"})
    a = tmp_path / "a"
    a.mkdir()
    os.symlink(str(outside), a / "d")
    repo.snapshot(str(a), message="A")
    tag_a = repo.tag("A", "main")
    b = tmp_path / "b"
    write_tree(b, {"d/x": PAYLOAD, "d/existing.txt": PAYLOAD})
    repo.snapshot(str(b), message="B")
    before_outside = snapshot_fs(outside)

    dest = tmp_path / "dest"
    repo.checkout(tag_a, str(dest))
    assert os.readlink(dest / "d") == str(outside)
    repo.checkout("main", str(dest), force=True)
    assert snapshot_fs(outside) == before_outside
    assert not (dest / "d").is_symlink() and read_tree(dest) == read_tree(b)
    repo.checkout(tag_a, str(dest), force=True)  # and back: the directory goes, the link returns
    assert os.readlink(dest / "d") == str(outside)
    assert snapshot_fs(outside) == before_outside


# -- snapshot refuses bad names on disk ----------------------------------------------------------------------
BAD_DISK_NAMES = {
    "backslash": "back\\slash.txt",
    "control": "ctl\x01char.txt",
    "newline": "new\nline.txt",
    "escape": "esc\x1b[31m.txt",
    "tab": "tab\there.txt",
}


@pytest.mark.parametrize("case", [*BAD_DISK_NAMES, "non-utf8", "nfc-nfd-twins"])
def test_snapshot_of_badly_named_file_fails_clearly(repo: Repository, tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    write_tree(src, {"good.txt": BENIGN, "sub/also-good.txt": BENIGN})
    bad_dir = src / "sub"
    if case == "non-utf8":
        with open(os.path.join(os.fsencode(bad_dir), b"bad\xff.txt"), "wb") as f:
            f.write(PAYLOAD)
        bad = os.fsdecode(b"bad\xff.txt")
    elif case == "nfc-nfd-twins":
        nfc, nfd = nfc_nfd()
        (bad_dir / nfc).write_bytes(b"one\n")
        (bad_dir / nfd).write_bytes(b"two\n")
        bad = None
    else:
        bad = BAD_DISK_NAMES[case]
        (bad_dir / bad).write_bytes(PAYLOAD)
    head = repo.head("main")
    branches = repo.branches()

    with pytest.raises(UnsafePathError) as info:
        repo.snapshot(str(src), message="must not land")
    message = str(info.value)
    assert str(bad_dir) in message
    if bad is not None:
        assert repr(bad) in message and info.value.name == bad
    else:
        assert repr(nfc_nfd()[0]) in message or repr(nfc_nfd()[1]) in message
    assert repo.head("main") == head and repo.branches() == branches
    assert [c for c, _ in repo.log("main")] == [head]
    assert repo.check().ok


def test_meta_dir_is_skipped_at_the_root_and_refused_below(repo: Repository, tmp_path: Path) -> None:
    """`.dacflow` is dacflow's own folder only at the root; deeper down it is an unsafe name, not skipped."""
    src = tmp_path / "src"
    write_tree(src, {"a.txt": BENIGN, ".dacflow/checkout.json": b"{}", "sub/.dacflow/data": PAYLOAD})
    head = repo.head("main")
    with pytest.raises(UnsafePathError, match=r"\.dacflow"):
        repo.snapshot(str(src))
    assert repo.head("main") == head
    (src / "sub" / ".dacflow" / "data").unlink()
    (src / "sub" / ".dacflow").rmdir()
    repo.snapshot(str(src))
    root = repo.odb.get_tree(repo.get_commit("main").tree)
    assert [e.name for e in root] == ["a.txt", "sub"]


def test_well_formed_planted_tree_checks_out(repo: Repository, tmp_path: Path) -> None:
    """Control: the planting helpers make trees that work when they are well formed."""
    tree = plant_tree(
        repo,
        utf8_sorted(
            [
                file_entry(repo, "ok.txt", BENIGN),
                ["run.sh", "file", plant_file(repo, b"#!/bin/sh\n"), 10, MODE_EXEC],
                ["l", "link", "ok.txt", 6, MODE_LINK],
            ]
        ),
    )
    point_main_at(repo, tree)
    dest = tmp_path / "dest"
    repo.checkout("main", str(dest))
    assert (dest / "ok.txt").read_bytes() == BENIGN and os.readlink(dest / "l") == "ok.txt"
    assert os.stat(dest / "run.sh").st_mode & 0o111
    assert repo.check(read_data=True).ok

"""Signed snapshots: sign and verify, and pull/push with require_signed refusing forged, unknown and unsigned tips
before anything reaches the destination."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow_support import run_dag, set_connection
from conftest import last_line, run_cli
from dacflow import CorruptObjectError, Repository, UsageError
from dacflow.errors import SignatureError
from dacflow.objects import Commit
from dacflow.odb import pack_key
from dacflow.refs import BRANCHES
from dacflow.signing import (
    generate_key,
    load_private_key,
    load_trusted,
    public_key_id,
    public_key_pem,
    sign_commit,
    signature_key,
    verify_commit,
)
from dacflow.stores.base import OVERWRITE
from dacflow.transfer import transfer


@pytest.fixture
def keys(tmp_path: Path) -> SimpleNamespace:
    """A publisher key and a stranger's key (each with its .pub), and a directory trusting only the publisher."""
    (tmp_path / "keys").mkdir()
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    pub_id = generate_key(tmp_path / "keys" / "publisher")
    other_id = generate_key(tmp_path / "keys" / "stranger")
    (trusted / "publisher.pub").write_bytes((tmp_path / "keys" / "publisher.pub").read_bytes())
    return SimpleNamespace(
        publisher=str(tmp_path / "keys" / "publisher"), stranger=str(tmp_path / "keys" / "stranger"),
        pub_id=pub_id, other_id=other_id, trusted=str(trusted),
    )  # fmt: skip


def _commit(repo: Repository, branch: str, content: bytes) -> str:
    return repo.commit_changes(branch, {"data/readings.csv": content}, f"batch {content[:8]!r}").commit


def _state(repo: Repository) -> tuple[dict[str, str], list[str]]:
    """Everything a transfer could change at a destination: its refs and every key in its store."""
    return repo.refs.all(), sorted(info.key for info in repo.store.list(""))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Repository, Repository]:
    """A source with one signed-later commit on main, and a destination that already has an older main."""
    src = Repository.init(str(tmp_path / "src"))
    _commit(src, "main", b"id,hr\n1,60\n")
    dst = Repository.init(str(tmp_path / "dst"))
    transfer(src, dst, ["main"])
    _commit(src, "main", b"id,hr\n1,60\n2,70\n")
    return src, dst


def test_sign_and_verify(repo: Repository, keys: SimpleNamespace) -> None:
    cid = _commit(repo, "main", b"x")
    assert sign_commit(repo, "main", keys.publisher) == keys.pub_id
    doc = json.loads(repo.store.get(signature_key(cid, keys.pub_id)))
    assert (doc["type"], doc["v"], doc["alg"], doc["commit"], doc["key"]) == (
        "signature", 1, "ed25519", cid, keys.pub_id
    )  # fmt: skip
    assert verify_commit(repo, cid, [keys.trusted]) == keys.pub_id
    assert verify_commit(repo, cid, load_trusted(f"{keys.publisher}.pub")) == keys.pub_id
    # Signing again keeps the signature; every accepted key format names the same key.
    before = repo.store.get(signature_key(cid, keys.pub_id))
    assert sign_commit(repo, cid, load_private_key(keys.publisher)) == keys.pub_id
    assert repo.store.get(signature_key(cid, keys.pub_id)) == before
    private = load_private_key(keys.publisher)
    from cryptography.hazmat.primitives import serialization as ser

    seed = base64.b64encode(private.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()))
    assert public_key_id(load_private_key(seed.decode())) == keys.pub_id
    ssh = private.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
    raw = base64.b64encode(private.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)).decode()
    assert set(load_trusted([ssh + " me@host", raw, public_key_pem(private)])) == {keys.pub_id}
    with pytest.raises(UsageError, match="holds no private key"):
        load_private_key(f"{keys.publisher}.pub")
    with pytest.raises(UsageError, match="exists; refusing to overwrite a key"):
        generate_key(keys.publisher)
    assert oct(os.stat(keys.publisher).st_mode & 0o777) == "0o600"


def _refused(src: Repository, dst: Repository, trusted: str, reason: str, match: str) -> SignatureError:
    before = _state(dst)
    with pytest.raises(SignatureError) as err:
        transfer(src, dst, ["main"], require_signed=[trusted])
    assert err.value.reason == reason and "\n" not in str(err.value)
    assert str(err.value).startswith(f"refusing branch 'main' of {src.url}: commit ")
    assert match in str(err.value)
    assert _state(Repository.open(dst.url)) == before  # no ref moved, no object or signature written
    return err.value


def test_unsigned_and_unknown_key_are_refused_and_nothing_is_synced(
    pair: tuple[Repository, Repository], keys: SimpleNamespace
) -> None:
    src, dst = pair
    _refused(src, dst, keys.trusted, "unsigned", "is not signed")
    sign_commit(src, "main", keys.stranger)
    err = _refused(src, dst, keys.trusted, "unknown_key", f"signed only by keys not trusted here ({keys.other_id})")
    assert err.keys == [keys.other_id]
    # Signed by the publisher as well: accepted, and both signatures travel with the commit.
    sign_commit(src, "main", keys.publisher)
    report = transfer(src, dst, ["main"], require_signed=[keys.trusted])
    head = src.head("main")
    assert report.refs["branches/main"]["to"] == head == dst.head("main")
    for kid in (keys.pub_id, keys.other_id):
        assert dst.store.get(signature_key(head, kid)) == src.store.get(signature_key(head, kid))
    assert verify_commit(dst, head, keys.trusted) == keys.pub_id


def test_a_tampered_commit_is_refused(pair: tuple[Repository, Repository], keys: SimpleNamespace) -> None:
    src, dst = pair
    signed = src.head("main")
    sign_commit(src, signed, keys.publisher)
    # The attacker (who controls the source store, not the key) rewrites the commit with other content and moves
    # the branch; its id changes, so the publisher's signature does not cover it.
    good = src.get_commit(signed)
    forged_tree = src.get_commit(src.commit_changes("attacker", {"data/readings.csv": b"id,hr\n1,999\n"}).commit).tree
    with src.odb.writer() as w:
        forged_id = w.add_object(Commit(forged_tree, good.parents, good.message, good.author, good.time, good.meta))
    _, token = src.refs.read(BRANCHES, "main")
    src.refs.swap(BRANCHES, "main", forged_id, token)
    _refused(src, dst, keys.trusted, "unsigned", f"commit {forged_id[:12]} is not signed")
    # Copying the old signature beside the forged commit does not help: it covers the old id only.
    src.store.put(signature_key(forged_id, keys.pub_id), src.store.get(signature_key(signed, keys.pub_id)))
    _refused(src, dst, keys.trusted, "bad_signature", f"signature by trusted key {keys.pub_id} does not verify")


def test_a_rewritten_signature_is_refused(pair: tuple[Repository, Repository], keys: SimpleNamespace) -> None:
    src, dst = pair
    head = src.head("main")
    sign_commit(src, head, keys.publisher)
    key = signature_key(head, keys.pub_id)
    doc = json.loads(src.store.get(key))
    sig = bytearray(base64.b64decode(doc["sig"]))
    sig[10] ^= 1
    src.store.put(key, json.dumps(doc | {"sig": base64.b64encode(bytes(sig)).decode()}).encode(), OVERWRITE)
    _refused(src, dst, keys.trusted, "bad_signature", "(the commit or its signature was altered)")
    src.store.put(key, b"not json", OVERWRITE)
    _refused(src, dst, keys.trusted, "bad_signature", "does not verify")
    src.store.put(key, json.dumps(doc | {"v": 2}).encode(), OVERWRITE)  # a format from a newer dacflow
    _refused(src, dst, keys.trusted, "unsupported", "has a format this dacflow does not know; upgrade dacflow")
    # Re-signing repairs it.
    sign_commit(src, head, keys.publisher)
    assert transfer(src, dst, ["main"], require_signed=[keys.trusted]).refs["branches/main"]["status"] == "updated"


def test_commit_bytes_altered_in_place_are_refused(pair: tuple[Repository, Repository], keys: SimpleNamespace) -> None:
    src, dst = pair
    head = src.head("main")
    sign_commit(src, head, keys.publisher)
    loc = src.odb.locate(head)
    assert loc is not None
    path = Path(src.store.root) / pack_key(loc.pack)  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length - 3] ^= 0xFF
    path.write_bytes(bytes(data))
    before = _state(dst)
    with pytest.raises(CorruptObjectError):
        transfer(Repository.open(src.url), dst, ["main"], require_signed=[keys.trusted])
    assert _state(Repository.open(dst.url)) == before


run = run_cli


def test_cli_sign_verify_and_signed_writes(
    repo: Repository, tmp_path: Path, keys: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    r = ["--repo", repo.url, "--json"]
    code, out, err = run(capsys, *r, "keygen", str(tmp_path / "cli-key"))
    assert code == 0, err
    assert json.loads(out)["key"] == public_key_id(load_private_key(str(tmp_path / "cli-key")))
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.csv").write_bytes(b"a\n1\n")
    code, out, err = run(capsys, *r, "snapshot", str(data), "--sign", keys.publisher)
    assert code == 0, err
    snap = json.loads(out)
    assert snap["signed_by"] == keys.pub_id and verify_commit(repo, snap["commit"], keys.trusted) == keys.pub_id
    (data / "p.csv").write_bytes(b"id,v\n1,2\n")
    code, out, err = run(capsys, *r, "table", "write", "t", str(data / "p.csv"), "-k", "id", "-b", "dev",
                         "--sign", keys.publisher)  # fmt: skip
    assert code == 0, err
    written = json.loads(out)["commit"]
    _commit(repo, "main", b"main moves")
    code, out, err = run(capsys, *r, "merge", "dev", "--sign", keys.stranger)
    assert code == 0, err
    merged = json.loads(out)
    assert merged["signed_by"] == keys.other_id and verify_commit(repo, written, keys.trusted) == keys.pub_id
    code, out, err = run(capsys, *r, "verify", "dev", "-t", keys.trusted)
    assert code == 0 and json.loads(out)["verified"]["dev"] == {"commit": written, "key": keys.pub_id}
    code, out, err = run(capsys, "--repo", repo.url, "verify", "main", "--trusted", keys.trusted)
    assert code == 11 and last_line(err) == (
        f"dacflow: error: main: commit {merged['commit'][:12]} is signed only by keys not trusted here "
        f"({keys.other_id}); add the signer's public key to the trusted keys if you trust it"
    )
    code, out, err = run(capsys, "--repo", repo.url, "sign", "main", "-k", keys.publisher)
    assert code == 0 and out.strip() == f"Signed {merged['commit'][:12]} (main) with key {keys.pub_id}"
    assert run(capsys, "--repo", repo.url, "verify", "main", "-t", keys.trusted)[0] == 0


def test_cli_pull_from_s3_with_require_signed(
    s3_env: str, tmp_path: Path, keys: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = Repository.init(f"s3://{s3_env}/hub")
    head = _commit(hub, "main", b"id,hr\n1,60\n" * 1000)
    local = Repository.init(str(tmp_path / "local"))
    before = _state(local)
    code, out, err = run(capsys, "pull", hub.url, local.url, "--ref", "main", "--require-signed", keys.trusted)
    assert code == 11 and last_line(err) == (
        f"dacflow: error: refusing branch 'main' of {hub.url}: commit {head[:12]} is not signed "
        "(sign it with `dacflow sign`)"
    )
    assert _state(local) == before
    sign_commit(hub, head, keys.publisher)
    code, out, err = run(capsys, "--json", "pull", hub.url, local.url, "--ref", "main",
                         "--require-signed", f"{keys.publisher}.pub", "--require-signed", keys.trusted)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["refs"]["branches/main"]["to"] == head == local.head("main")
    assert local.read_file("main", "data/readings.csv") == b"id,hr\n1,60\n" * 1000
    assert verify_commit(local, head, keys.trusted) == keys.pub_id  # the signature came along
    # Pushing it on from the local copy needs nothing but what travelled.
    third = Repository.init(str(tmp_path / "third"))
    code, out, err = run(capsys, "push", local.url, third.url, "--ref", "main", "--require-signed", keys.trusted)
    assert code == 0, err and third.head("main") == head


def test_airflow_signs_with_the_connection_key_and_the_transfer_refuses_untrusted_tips(
    airflow_dags: Path, tmp_path: Path, keys: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from dacflow.providers.airflow.operators import DacTransferOperator

    src = Repository.init(str(tmp_path / "src"))
    dst_path = str(tmp_path / "dst")
    pem = Path(keys.publisher).read_text()
    set_connection(monkeypatch, "dacflow_test_sign", "dacflow", extra={"url": src.url, "signing_key": pem})
    monkeypatch.setenv("DACFLOW_TEST_SIGN_SRC", src.url)
    monkeypatch.setenv("DACFLOW_TEST_SIGN_DST", dst_path)
    monkeypatch.setenv("DACFLOW_TEST_SIGN_TRUSTED", "dacflow_test_sign")  # the connection's own public key

    out = run_dag(airflow_dags, "dac_test_signing.py")
    assert out.state == "success", out.tasks
    written = out.xcoms[("write_signed", "return_value")]
    assert written["signed_by"] == keys.pub_id and Repository.open(dst_path).head("main") == written["commit"]
    assert verify_commit(Repository.open(dst_path), written["commit"], keys.trusted) == keys.pub_id

    # A new commit signed by the stranger only, and a subscriber that trusts the publisher: the task fails.
    _commit(src, "main", b"forged?")
    sign_commit(src, "main", keys.stranger)
    monkeypatch.setenv("DACFLOW_TEST_SIGN_TRUSTED", f"{keys.publisher}.pub")
    dst = Repository.open(dst_path)
    before = _state(dst)
    op = DacTransferOperator(task_id="ship", source_conn_id=None, source_url=src.url, target_url=dst_path,
                             refs=["main"], require_signed=f"{keys.publisher}.pub")  # fmt: skip
    with pytest.raises(AirflowFailException) as err:
        op.execute({"ti": None, "outlet_events": {}})
    assert str(err.value) == (
        f"dacflow: refusing branch 'main' of {src.url}: commit {src.head('main')[:12]} is signed only by keys not "
        f"trusted here ({keys.other_id}); add the signer's public key to the trusted keys if you trust it"
    )
    out = run_dag(airflow_dags, "dac_test_signing.py")
    assert out.state == "failed" and out.tasks == {"write_signed": "success", "ship": "failed"}
    assert "signed_by" not in out.xcoms[("write_signed", "return_value")]  # no change: nothing of its own to sign
    assert _state(Repository.open(dst_path)) == before


def test_the_connection_signing_key_is_masked_and_its_public_half_is_trusted(
    tmp_path: Path, keys: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk._shared.secrets_masker import redact
    from dacflow.providers.airflow.hooks import DacHook, trusted_keys

    generate_key(tmp_path / "fresh")  # a key no other test has shown to the masker
    pem = (tmp_path / "fresh").read_text()
    body = pem.splitlines()[1]
    assert redact(f"<{body}>") == f"<{body}>"
    escaped = pem.replace("\n", "\\n")  # as typed into a one-line UI field
    set_connection(monkeypatch, "dac_signer", "dacflow", extra={"url": str(tmp_path / "r"), "signing_key": escaped})
    key = DacHook("dac_signer").signing_key()
    assert public_key_id(key) == public_key_id(load_private_key(str(tmp_path / "fresh")))
    assert redact(f"<{body}>") == "<***>" and body not in redact(f"key: {pem}")
    assert set(load_trusted(trusted_keys(["dac_signer", f"{keys.publisher}.pub"]))) == {public_key_id(key), keys.pub_id}
    with pytest.raises(UsageError, match="no trusted key file or directory '/nowhere/k.pub'"):
        trusted_keys("/nowhere/k.pub")
    set_connection(monkeypatch, "dac_nokey", "dacflow", extra={"url": str(tmp_path / "r")})
    with pytest.raises(UsageError, match="connection 'dac_nokey' has no signing_key"):
        DacHook("dac_nokey").signing_key()

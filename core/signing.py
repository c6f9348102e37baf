"""Signed snapshots: Ed25519 signatures over commit ids, kept beside the commits (DESIGN §7, docs/signing.md).

A commit id is the hash of the commit's exact bytes, which name the tree and parents by their hashes, so one
signature over the id vouches for the whole snapshot and its history. A signature is a small versioned JSON
object at `signatures/<commit id>/<key id>`; it travels with the commit on push and pull. `verify_commit`
accepts a commit only if a trusted public key verifies one of its signatures, and raises `SignatureError`
(unsigned, unknown key, bad signature) otherwise. `cryptography` is imported on first use (extra `sign`).

Key files: a private key is PEM (PKCS#8, optionally encrypted) or the base64 of its raw 32-byte seed; a public
key is PEM, an OpenSSH `ssh-ed25519` line or the base64 of its raw 32 bytes. Trusted keys are given as files,
directories of `*.pub`/`*.pem` files, or key text.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    CorruptObjectError,
    KeyNotFoundError,
    PreconditionFailedError,
    SignatureError,
    UnsupportedFormatError,
    UsageError,
)
from .objects import canonical_json, hash_bytes, is_object_id, utc_now
from .stores.base import CREATE, OVERWRITE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from .repository import Repository

log = logging.getLogger(__name__)

SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
PREFIX = "signatures/"
MAX_SIGNATURE_BYTES = 4096  # a signature object is ~250 bytes; anything larger is not one of ours
KEY_ID_LENGTH = 16  # hex digits of the public key's BLAKE3 hash
_KEY_RE = re.compile(r"^signatures/([0-9a-f]{64})/([0-9a-f]{16})$")
#: Above this many commits, one listing of `signatures/` is cheaper than one listing per commit.
_LIST_ALL_ABOVE = 2

#: Trusted public keys by key id.
TrustedKeys = Mapping[str, "Ed25519PublicKey"]


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - depends on the environment
        raise UsageError("signing needs the 'cryptography' package: pip install 'dacflow[sign]'") from None
    return ed25519


def _serialization() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def _read_source(source: str | bytes | os.PathLike[str]) -> tuple[bytes, str]:
    """(key bytes, where they came from) from a path, or key text given directly."""
    if isinstance(source, bytes):
        return source, "the given key"
    text = os.fspath(source)
    if os.path.isfile(text):
        with open(text, "rb") as f:
            return f.read(), text
    if "BEGIN " in text or text.startswith("ssh-ed25519 ") or _raw32(text.strip()) is not None:
        return text.encode(), "the given key"
    if os.path.isdir(text):
        raise UsageError(f"{text!r} is a directory, not a key file", path=text)
    raise UsageError(f"no key file {text!r}", path=text)


def _raw32(text: str) -> bytes | None:
    """The 32 bytes a base64 text encodes, or None if it is not exactly that."""
    if not text or len(text) > 64:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def load_private_key(
    source: str | bytes | os.PathLike[str] | Ed25519PrivateKey, password: bytes | None = None
) -> Ed25519PrivateKey:
    """An Ed25519 private key from a file path, PEM text or a base64 seed; raise `UsageError` if it is none."""
    ed25519 = _crypto()
    if isinstance(source, ed25519.Ed25519PrivateKey):
        return source
    data, where = _read_source(source)  # type: ignore[arg-type]
    text = data.decode("ascii", "replace").strip()
    raw = _raw32(text)
    if raw is not None:
        return ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    if "PRIVATE KEY" not in text:
        raise UsageError(f"{where} holds no private key (PEM or base64 of a 32-byte seed)", path=where)
    try:
        key = _serialization().load_pem_private_key(data, password=password)
    except TypeError:
        raise UsageError(f"the private key in {where} is encrypted; give its password", path=where) from None
    except ValueError:
        raise UsageError(f"{where} holds no readable PEM private key", path=where) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UsageError(f"the private key in {where} is not an Ed25519 key", path=where)
    return key


def _public_keys_in(data: bytes, where: str) -> list[Ed25519PublicKey]:
    """Every public key in a key file or text: PEM blocks, `ssh-ed25519` lines, base64 lines."""
    ed25519, ser = _crypto(), _serialization()
    text = data.decode("ascii", "replace")
    keys: list[Ed25519PublicKey] = []
    for match in re.finditer(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", text, re.S):
        pem, label = match.group(0).encode(), match.group(1)
        try:
            if "PRIVATE" in label:
                key: Any = ser.load_pem_private_key(pem, password=None).public_key()
            else:
                key = ser.load_pem_public_key(pem)
        except (ValueError, TypeError):
            raise UsageError(f"{where} holds an unreadable {label.lower()}", path=where) from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise UsageError(f"{where} holds a {label.lower()} that is not Ed25519", path=where)
        keys.append(key)
    rest = re.sub(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", "", text, flags=re.S)
    for line in rest.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("ssh-ed25519 "):
            try:
                keys.append(ser.load_ssh_public_key(" ".join(line.split()[:2]).encode()))
            except (ValueError, TypeError):
                raise UsageError(f"{where} holds an unreadable ssh-ed25519 key", path=where) from None
            continue
        raw = _raw32(line.split()[0])
        if raw is None:
            raise UsageError(f"{where} holds a line that is no Ed25519 public key: {line[:40]!r}", path=where)
        keys.append(ed25519.Ed25519PublicKey.from_public_bytes(raw))
    if not keys:
        raise UsageError(f"{where} holds no public key", path=where)
    return keys


def load_public_key(source: str | bytes | os.PathLike[str] | Ed25519PublicKey) -> Ed25519PublicKey:
    """The one Ed25519 public key in a file or text (PEM, `ssh-ed25519 …` or base64 of 32 bytes)."""
    if isinstance(source, _crypto().Ed25519PublicKey):
        return source
    data, where = _read_source(source)  # type: ignore[arg-type]
    keys = _public_keys_in(data, where)
    if len(keys) != 1:
        raise UsageError(f"{where} holds {len(keys)} public keys; expected one", path=where)
    return keys[0]


def _raw_public(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    ser = _serialization()
    public: Any = key.public_key() if isinstance(key, _crypto().Ed25519PrivateKey) else key
    return bytes(public.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw))


def public_key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short fingerprint of a public key (16 hex digits of its BLAKE3 hash); names its signatures."""
    return hash_bytes(_raw_public(key))[:KEY_ID_LENGTH]


def public_key_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The public key as PEM text, what a subscriber adds to its trusted keys."""
    ser = _serialization()
    public: Any = key.public_key() if isinstance(key, _crypto().Ed25519PrivateKey) else key
    return str(public.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode())


def generate_key(path: str | os.PathLike[str]) -> str:
    """Write a new private key to `path` (PEM, mode 0600, never overwriting) and its public key to `path.pub`.

    Return the key id."""
    ser = _serialization()
    key = _crypto().Ed25519PrivateKey.generate()
    path = os.fspath(path)
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    for target, data, mode in ((path, pem, 0o600), (f"{path}.pub", public_key_pem(key).encode(), 0o644)):
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            raise UsageError(f"{target} exists; refusing to overwrite a key", path=target) from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return public_key_id(key)


def load_trusted(sources: TrustedKeys | Iterable[Any] | str | os.PathLike[str]) -> dict[str, Ed25519PublicKey]:
    """Trusted public keys by id from files, directories (their `*.pub` and `*.pem` files), key text or keys.

    Raise `UsageError` if the sources name no key at all: trusting nothing would refuse everything silently."""
    if isinstance(sources, Mapping):
        return dict(sources)
    if isinstance(sources, (str, bytes, os.PathLike)):
        sources = [sources]
    ed25519 = _crypto()
    keys: list[Ed25519PublicKey] = []
    for source in sources:
        if isinstance(source, ed25519.Ed25519PrivateKey):
            keys.append(source.public_key())
        elif isinstance(source, ed25519.Ed25519PublicKey):
            keys.append(source)
        elif isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
            for name in sorted(os.listdir(source)):
                full = os.path.join(source, name)
                if name.endswith((".pub", ".pem")) and os.path.isfile(full):
                    with open(full, "rb") as f:
                        keys.extend(_public_keys_in(f.read(), full))
        else:
            data, where = _read_source(source)
            keys.extend(_public_keys_in(data, where))
    if not keys:
        raise UsageError("no trusted public keys found (give key files or a directory of *.pub files)")
    return {public_key_id(k): k for k in keys}


def signature_key(commit: str, key_id: str) -> str:
    """The store key of the signature by `key_id` over `commit`."""
    return f"{PREFIX}{commit}/{key_id}"


def _payload(doc: Mapping[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in doc.items() if k != "sig"})


def _parse(data: bytes, key: str) -> dict[str, Any]:
    """A signature object, validated; raise `CorruptObjectError` / `UnsupportedFormatError` if it is not one."""
    if len(data) > MAX_SIGNATURE_BYTES:
        raise CorruptObjectError(f"{key} is {len(data)} bytes, too large for a signature", key=key)
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CorruptObjectError(f"{key} is not JSON", key=key) from None
    if not isinstance(doc, dict) or doc.get("type") != "signature":
        raise CorruptObjectError(f"{key} is not a signature object", key=key)
    if doc.get("v") != SIGNATURE_VERSION or doc.get("alg") != ALGORITHM:
        raise UnsupportedFormatError(
            f"{key} is a signature of version {doc.get('v')!r} ({doc.get('alg')!r}); this dacflow knows "
            f"version {SIGNATURE_VERSION} ({ALGORITHM}): upgrade dacflow",
            key=key,
        )
    for name in ("commit", "key", "time", "sig"):
        if not isinstance(doc.get(name), str):
            raise CorruptObjectError(f"{key} has no {name}", key=key)
    return doc


def _check(doc: Mapping[str, Any], commit: str, key_id: str, public: Ed25519PublicKey) -> bool:
    """True if `doc` is a valid signature by `public` over `commit`."""
    from cryptography.exceptions import InvalidSignature

    if doc.get("commit") != commit or doc.get("key") != key_id:
        return False
    try:
        public.verify(base64.b64decode(doc["sig"], validate=True), _payload(doc))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def sign_commit(repo: Repository, commit: str, key: Any, *, password: bytes | None = None) -> str:
    """Sign commit `commit` (an id or any ref) with `key` (a private key, its file or text); return the key id.

    Signing again with the same key keeps the existing signature; one that does not verify is replaced."""
    private = load_private_key(key, password)
    cid = repo.resolve(commit)
    repo.odb.get_commit(cid)  # exists and hashes to its id
    kid = public_key_id(private)
    doc: dict[str, Any] = {"type": "signature", "v": SIGNATURE_VERSION, "alg": ALGORITHM, "commit": cid,
                           "key": kid, "time": utc_now()}  # fmt: skip
    doc["sig"] = base64.b64encode(private.sign(_payload(doc))).decode()
    store_key = signature_key(cid, kid)
    try:
        repo.store.put(store_key, canonical_json(doc), CREATE)
    except PreconditionFailedError:
        try:
            if _check(_parse(repo.store.get(store_key), store_key), cid, kid, private.public_key()):
                return kid
        except (CorruptObjectError, UnsupportedFormatError, KeyNotFoundError):
            pass
        log.warning("replacing a signature of %s by key %s that did not verify", cid[:12], kid)
        repo.store.put(store_key, canonical_json(doc), OVERWRITE)
    log.info("signed %s with key %s", cid[:12], kid)
    return kid


def signers(repo: Repository, commit: str) -> list[str]:
    """The key ids that left a signature object for `commit` (not verified)."""
    out = []
    for info in repo.store.list(f"{PREFIX}{commit}/"):
        m = _KEY_RE.match(info.key)
        if m and m.group(1) == commit:
            out.append(m.group(2))
    return sorted(out)


def verify_commit(repo: Repository, commit: str, trusted: TrustedKeys | Iterable[Any]) -> str:
    """Return the id of a trusted key whose signature over `commit` verifies; raise `SignatureError` if none.

    `reason` on the error: "unsigned" (no signature at all), "unknown_key" (signed only by keys not trusted),
    "bad_signature" (a trusted key's signature does not verify: the commit or the signature was altered) or
    "unsupported" (a trusted key's signature is of a newer format)."""
    keys = load_trusted(trusted)
    repo.odb.get_commit(commit)  # the commit exists and its bytes hash to the id the signature covers
    found = signers(repo, commit)
    if not found:
        raise SignatureError(
            f"commit {commit[:12]} is not signed (sign it with `dacflow sign`)", commit=commit, reason="unsigned",
            keys=[],
        )  # fmt: skip
    bad, newer = [], []
    for kid in found:
        if kid not in keys:
            continue
        store_key = signature_key(commit, kid)
        try:
            doc = _parse(repo.store.get(store_key), store_key)
        except UnsupportedFormatError as exc:
            log.warning("%s", exc)
            newer.append(kid)
            continue
        except (CorruptObjectError, KeyNotFoundError) as exc:
            log.warning("signature %s unusable: %s", store_key, exc)
            bad.append(kid)
            continue
        if _check(doc, commit, kid, keys[kid]):
            return kid
        bad.append(kid)
    if newer and not bad:
        raise SignatureError(
            f"commit {commit[:12]}: the signature by trusted key {newer[0]} has a format this dacflow does not know; "
            "upgrade dacflow",
            commit=commit, reason="unsupported", keys=found,
        )  # fmt: skip
    if bad:
        raise SignatureError(
            f"commit {commit[:12]}: the signature by trusted key {bad[0]} does not verify (the commit or its "
            "signature was altered)",
            commit=commit, reason="bad_signature", keys=found,
        )  # fmt: skip
    raise SignatureError(
        f"commit {commit[:12]} is signed only by keys not trusted here ({', '.join(found)}); add the signer's "
        "public key to the trusted keys if you trust it",
        commit=commit, reason="unknown_key", keys=found,
    )  # fmt: skip


def verify_refs(repo: Repository, refs: Iterable[tuple[str, str]], trusted: TrustedKeys | Iterable[Any]) -> dict:
    """Verify the commit of each (ref name, commit id); return {ref: key id} or raise `SignatureError` naming
    the first ref refused."""
    keys = load_trusted(trusted)
    out = {}
    for name, commit in refs:
        try:
            out[name] = verify_commit(repo, commit, keys)
        except SignatureError as exc:
            raise SignatureError(f"refusing {name} of {repo.url}: {exc.message}", ref=name, **exc.data) from None
    return out


def copy_signatures(src: Repository, dst: Repository, commits: Iterable[str]) -> int:
    """Copy the signature objects of `commits` from `src` to `dst` (those it lacks); return how many were new."""
    wanted = {c for c in commits if is_object_id(c)}
    if not wanted:
        return 0
    if len(wanted) <= _LIST_ALL_ABOVE:
        infos = [info for c in sorted(wanted) for info in src.store.list(f"{PREFIX}{c}/")]
    else:
        infos = list(src.store.list(PREFIX))
    copied = 0
    for info in infos:
        m = _KEY_RE.match(info.key)
        if not m or m.group(1) not in wanted or info.size > MAX_SIGNATURE_BYTES:
            continue
        try:
            dst.store.put(info.key, src.store.get(info.key), CREATE)
            copied += 1
        except PreconditionFailedError:
            pass  # already there
        except KeyNotFoundError:
            pass  # deleted meanwhile
    return copied


__all__ = [
    "SignatureError",
    "TrustedKeys",
    "copy_signatures",
    "generate_key",
    "load_private_key",
    "load_public_key",
    "load_trusted",
    "public_key_id",
    "public_key_pem",
    "sign_commit",
    "signature_key",
    "signers",
    "verify_commit",
    "verify_refs",
]

"""CLI verbs for signed snapshots: `dacflow keygen`, `dacflow sign` and `dacflow verify` (docs/signing.md)."""

from __future__ import annotations

import click

from ..errors import SignatureError
from .main import Ctx, cli, out, pass_ctx


@cli.command()
@click.argument("path")
@pass_ctx
def keygen(ctx: Ctx, path: str) -> None:
    """Create an Ed25519 signing key at PATH (mode 0600) and its public key at PATH.pub."""
    from ..signing import generate_key

    kid = generate_key(path)
    ctx.emit(
        {"key": kid, "private": path, "public": f"{path}.pub"},
        lambda: out.print(f"Key {kid}: private key {path} (keep it secret), public key {path}.pub (share it)"),
    )


@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("-k", "--key", "key_file", required=True, metavar="FILE", help="Ed25519 private key file.")
@pass_ctx
def sign(ctx: Ctx, refs: tuple[str, ...], key_file: str) -> None:
    """Sign the commit each REF names; the signature covers the commit and, through its hashes, all it holds."""
    from ..signing import load_private_key, sign_commit

    repo = ctx.open()
    key = load_private_key(key_file)
    signed = {ref: {"commit": repo.resolve(ref), "key": sign_commit(repo, ref, key)} for ref in refs}

    def human() -> None:
        for ref, s in signed.items():
            out.print(f"Signed {s['commit'][:12]} ({ref}) with key {s['key']}")

    ctx.emit({"signed": signed}, human)


@cli.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option(
    "-t", "--trusted", multiple=True, required=True, metavar="DIR|FILE",
    help="Trusted public keys: key files or directories of *.pub files (repeatable).",
)  # fmt: skip
@pass_ctx
def verify(ctx: Ctx, refs: tuple[str, ...], trusted: tuple[str, ...]) -> None:
    """Check that each REF's commit is signed by a trusted key; exit 11 naming the first that is not."""
    from ..signing import load_trusted, verify_commit

    repo = ctx.open()
    keys = load_trusted(list(trusted))
    verified = {}
    for ref in refs:
        commit = repo.resolve(ref)
        try:
            verified[ref] = {"commit": commit, "key": verify_commit(repo, commit, keys)}
        except SignatureError as exc:
            raise SignatureError(f"{ref}: {exc.message}", ref=ref, **exc.data) from None

    def human() -> None:
        for ref, v in verified.items():
            out.print(f"[green]ok[/] {v['commit'][:12]} ({ref}) signed by trusted key {v['key']}")

    ctx.emit({"verified": verified}, human)

"""Assets for dacflow branches: `dacflow://<store scheme>/<bucket or path>?branch=<name>[&table=<name>]`.

An asset names data, never credentials: the store URL without secrets plus the branch (and table). Airflow
finds `sanitize_uri`, `create_asset` and `convert_asset_to_openlineage` through the provider info.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from airflow.sdk import Asset
from dacflow.names import check_ref_name

SCHEME = "dacflow"


def asset_uri(store_url: str, branch: str, table: str | None = None) -> str:
    """The asset URI of `branch` (and `table`) in the repository at `store_url`."""
    check_ref_name(branch)
    head, sep, rest = str(store_url).partition("://")
    kind, location = (head.lower(), rest) if sep else ("file", head)
    if kind == "file":
        import os

        location = os.path.abspath(location).lstrip("/")
    location = location.strip("/")
    query = {"branch": branch, **({"table": table} if table else {})}
    return f"{SCHEME}://{kind}/{urllib.parse.quote(location)}?{urllib.parse.urlencode(sorted(query.items()))}"


def create_asset(store_url: str, branch: str, table: str | None = None, *, name: str | None = None) -> Asset:
    """An Airflow `Asset` for a branch (and table) of a repository; `name` defaults to the URI."""
    uri = asset_uri(store_url, branch, table)
    return Asset(name=name or uri, uri=uri)


def parse_uri(uri: str) -> tuple[str, str, str | None]:
    """(store URL, branch, table) from a dacflow asset URI; ValueError names what is wrong."""
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    if parts.scheme != SCHEME or not parts.netloc:
        raise ValueError(f"{uri!r} is not a dacflow asset URI (dacflow://<store scheme>/<location>?branch=…)")
    if "branch" not in query:
        raise ValueError(f"dacflow asset URI {uri!r} names no branch (add ?branch=<name>)")
    location = urllib.parse.unquote(parts.path).lstrip("/")
    store = f"/{location}" if parts.netloc == "file" else f"{parts.netloc}://{location}"
    return store, query["branch"], query.get("table")


def sanitize_uri(parts: urllib.parse.SplitResult) -> urllib.parse.SplitResult:
    """Validate a dacflow asset URI for Airflow: a store scheme, a location and a valid branch name."""
    uri = urllib.parse.urlunsplit(parts)
    _, branch, _ = parse_uri(uri)
    try:
        check_ref_name(branch)
    except Exception as exc:
        raise ValueError(f"dacflow asset URI {uri!r}: {exc}") from None
    if parts.path in ("", "/"):
        raise ValueError(f"dacflow asset URI {uri!r} names no bucket or path")
    return parts._replace(netloc=parts.netloc.lower())


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any = None) -> Any:
    """The OpenLineage dataset of an asset: namespace `dacflow://<scheme>/<bucket>`, name `<path>@<branch>`."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parts = urllib.parse.urlsplit(asset.uri)
    _, branch, table = parse_uri(asset.uri)
    bucket, _, path = parts.path.lstrip("/").partition("/")
    name = f"{path or '/'}@{branch}" + (f"/{table}" if table else "")
    return Dataset(namespace=f"{SCHEME}://{parts.netloc}/{bucket}", name=name)


def openlineage_dataset(asset: Asset) -> Any:
    """The OpenLineage dataset of any asset a task read or wrote: a dacflow branch, or a plain file or object-store
    prefix (a snapshot's source), named the OpenLineage way (`file` + path, `s3://bucket` + key)."""
    if asset.uri.startswith(f"{SCHEME}://"):
        return convert_asset_to_openlineage(asset)
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parts = urllib.parse.urlsplit(asset.uri)
    if parts.scheme in ("", "file"):
        return Dataset(namespace="file", name=parts.path)
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path.lstrip("/") or "/")

"""Stores: where repositories live. One small module per storage system, chosen by URL scheme.

Schemes are looked up in the `dacflow.stores` entry-point group (so a third party can add a backend) and the
module is imported only when a URL needs it, so `import dacflow` pulls in no cloud SDK.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from ..errors import UsageError
from .base import CREATE, OVERWRITE, ObjectInfo, PutMode, Store

log = logging.getLogger(__name__)

# Built-in schemes, used when the distribution's entry points are not installed (e.g. run from a checkout).
_BUILTIN = {
    "file": "dacflow.stores.local:LocalStore",
    "s3": "dacflow.stores.s3:S3Store",
    "gs": "dacflow.stores.gcs:GCSStore",
    "az": "dacflow.stores.azure:AzureStore",
}
# The extra that installs a scheme's SDK, for the message when it is missing.
_EXTRAS = {"s3": "s3", "gs": "gcs", "az": "azure"}


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def store_class(scheme: str) -> Any:
    """Return the class registered for a URL scheme, importing its module on first use."""
    target = None
    for ep in entry_points(group="dacflow.stores"):
        if ep.name == scheme:
            target = ep.value
            break
    target = target or _BUILTIN.get(scheme)
    if target is None:
        known = sorted({ep.name for ep in entry_points(group="dacflow.stores")} | set(_BUILTIN))
        raise UsageError(
            f"no store for URL scheme {scheme!r}; known schemes: {', '.join(known)} "
            "(a missing cloud extra? try: pip install 'dacflow[s3]', '[gcs]' or '[azure]')",
            scheme=scheme,
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"the store for {scheme}:// needs a package that is not installed ({exc.name}); "
            f"install the matching extra, e.g. pip install 'dacflow[{_EXTRAS.get(scheme, scheme)}]'",
            scheme=scheme,
        ) from None
    return getattr(module, attr)


def open_store(url: str, *, create: bool = False, **options: Any) -> Store:
    """Open the store a URL names (`/path`, `file:///path`, or any registered scheme)."""
    if not url or not str(url).strip():
        raise UsageError("empty repository URL; pass --repo PATH|URL or set DACFLOW_REPO")
    url = str(url)
    store: Store = store_class(_scheme(url)).from_url(url, create=create, **options)
    return store


__all__ = ["CREATE", "OVERWRITE", "ObjectInfo", "PutMode", "Store", "open_store", "store_class"]

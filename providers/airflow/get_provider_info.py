"""Provider info Airflow reads through the `apache_airflow_provider` entry point (no Airflow import here)."""

from __future__ import annotations

from typing import Any

_PKG = "dacflow.providers.airflow"
_NAME = "dacflow"


def _string(label: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": description, "schema": schema}


CONN_FIELDS: dict[str, dict[str, Any]] = {
    "url": _string("Store URL", "Where the repository lives: /path, file:///path, s3://bucket/prefix, gs://…, az://…"),
    "endpoint_url": _string("Endpoint URL", "S3-compatible or GCS endpoint (leave empty for the cloud's own)"),
    "region": _string("Region", "AWS region of the bucket"),
    "aws_access_key_id": _string("AWS access key id", "Empty: the standard AWS credential chain"),
    "aws_secret_access_key": _string("AWS secret access key", "", secret=True),
    "aws_session_token": _string("AWS session token", "", secret=True),
    "gcp_project": _string("GCP project", "Google Cloud project of the bucket"),
    "gcp_keyfile_json": _string(
        "GCP service account key (JSON)", "Empty: application default credentials", secret=True
    ),
    "azure_connection_string": _string("Azure connection string", "Account name and key in one string", secret=True),
    "azure_account_url": _string("Azure account URL", "https://<account>.blob.core.windows.net"),
    "azure_credential": _string("Azure account key or SAS token", "Used with the account URL", secret=True),
    "signing_key": _string(
        "Signing key (Ed25519, PEM)", "Private key operators use with sign=True (docs/signing.md)", secret=True
    ),
    "trusted_keys": _string("Trusted public keys", "Public keys (PEM) a transfer with require_signed accepts"),
}
# Extra keys whose values are secrets: masked in logs the moment a hook reads them.
SECRET_FIELDS = frozenset(k for k, v in CONN_FIELDS.items() if v["schema"].get("format") == "password")


def get_provider_info() -> dict[str, Any]:
    """Describe dacflow to Airflow: hooks, operators, sensors, triggers, the connection type and asset URIs."""
    modules = {kind: [f"{_PKG}.{kind}"] for kind in ("hooks", "operators", "sensors", "triggers")}
    return {
        "package-name": "dacflow",
        "name": "dacflow",
        "description": "Data as code: snapshots, branches, diffs, row-level merges and delta transfer for datasets.",
        "integrations": [
            {"integration-name": _NAME, "external-doc-url": "https://github.com/dacflow/dacflow", "tags": ["software"]}
        ],
        **{kind: [{"integration-name": _NAME, "python-modules": mods}] for kind, mods in modules.items()},
        "connection-types": [
            {
                "connection-type": "dacflow",
                "hook-class-name": f"{_PKG}.hooks.DacHook",
                "hook-name": "dacflow repository",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "login", "password"],
                    "relabeling": {},
                    "placeholders": {"url": "s3://my-bucket/datasets/heart"},
                },
            }
        ],
        "asset-uris": [
            {
                "schemes": ["dacflow"],
                "handler": f"{_PKG}.assets.sanitize_uri",
                "factory": f"{_PKG}.assets.create_asset",
                "to_openlineage_converter": f"{_PKG}.assets.convert_asset_to_openlineage",
            }
        ],
    }

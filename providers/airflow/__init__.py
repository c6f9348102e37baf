"""Apache Airflow 3 provider for dacflow (hooks, operators, sensors, triggers, assets).

A placeholder until the provider lands: importing it needs no Airflow.
"""

from __future__ import annotations

__all__: list[str] = []

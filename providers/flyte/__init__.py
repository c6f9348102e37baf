"""Flytekit plugin for dacflow (snapshot types, tasks, sensor).

A placeholder until the plugin lands: importing it needs no flytekit.
"""

from __future__ import annotations

__all__: list[str] = []

"""Test helpers that ship with dacflow so that every store, including third-party ones, can prove itself."""

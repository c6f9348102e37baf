"""Engine plugins for dacflow; each imports its engine lazily and only when used."""

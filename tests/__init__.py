"""labkit's tests: a regular package, so no installed top-level `tests` (Ciw ships one) shadows it."""

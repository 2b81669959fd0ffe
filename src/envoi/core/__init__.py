"""Pure rules and types with no I/O: everything else may import from here, never the reverse."""

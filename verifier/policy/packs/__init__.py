"""The built-in policy packs, one TOML file each (docs/design.md §13); read by
verifier/policy/load.py through importlib.resources, so they install with the wheel."""

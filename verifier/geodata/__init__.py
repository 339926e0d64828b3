"""Country boundary data shipped with the verifier (docs/design.md §16); read by verifier/geo.py."""

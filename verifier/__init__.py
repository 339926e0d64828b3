"""gpu-attest verifier: checks, stores and reconciles the fleet's evidence."""

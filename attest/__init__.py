"""gpu-attest shared kernel: errors, keys, DSSE envelopes, wire <-> domain conversion, proofs.

Imported by the agent, the verifier and the regulator's report verifier; imports neither side.
"""

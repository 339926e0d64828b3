"""gpu-attest agent: the node daemon that inventories GPUs and streams signed evidence."""

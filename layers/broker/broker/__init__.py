"""Token broker core, shipped as the functions' shared Lambda layer."""

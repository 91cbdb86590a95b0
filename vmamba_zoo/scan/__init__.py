"""vmamba_zoo.scan."""

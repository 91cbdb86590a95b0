"""vmamba_zoo.layers."""

"""vmamba_zoo.restoration."""

"""vmamba_zoo.models."""

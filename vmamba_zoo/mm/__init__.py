"""vmamba_zoo.mm."""

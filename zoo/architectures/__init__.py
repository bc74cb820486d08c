"""Built-in architectures, one family per module; every module here is imported by the registry."""

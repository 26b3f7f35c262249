"""The settings' defaults, conf/defaults.toml (package data, read through importlib.resources)."""

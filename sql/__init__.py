"""The stages' SQL, one file per stage (package data, read through importlib.resources)."""

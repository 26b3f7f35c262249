"""Defaults from conf/defaults.toml, and where the Sedona jars are."""
from __future__ import annotations

import functools
import os
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JAR_DIR = ROOT / ".cache" / "jars"


@functools.lru_cache(maxsize=1)
def load() -> dict:
    with open(ROOT / "conf" / "defaults.toml", "rb") as f:
        return tomllib.load(f)


def sedona_jars() -> list[Path]:
    """The jar files named in conf, from AEF_ZONAL_JARS (a folder) or .cache/jars."""
    folder = Path(os.environ.get("AEF_ZONAL_JARS", JAR_DIR))
    jars = []
    for coord in load()["spark"]["sedona_jars"]:
        _, artifact, version = coord.split(":")
        jar = folder / f"{artifact}-{version}.jar"
        if not jar.exists():
            raise FileNotFoundError(f"Sedona jar {jar} is missing; run `make setup` to fetch it "
                                    "(or point AEF_ZONAL_JARS at a folder holding it)")
        jars.append(jar)
    return jars

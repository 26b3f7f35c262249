"""Settings: conf/defaults.toml, then a user's --conf file over it, then command-line options."""

from __future__ import annotations

import copy
import os
import tomllib
from importlib.resources import files
from pathlib import Path

from aef_zonal.errors import JobError

DEFAULTS = files("aef_zonal.conf") / "defaults.toml"
# what `make setup` fetches into a checkout; an installed wheel has neither, and the session then
# asks Spark for the jars by their Maven coordinates (jobs/session.py)
CACHE = Path(__file__).resolve().parent.parent / ".cache"
JAR_DIR = CACHE / "jars"
CLASS_ARCHIVE = CACHE / "jvm" / "aef-zonal.jsa"


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in base and where != "spark.conf":  # any Spark setting may be added
            raise ValueError(
                f"unknown setting '{where + '.' if where else ''}{key}'; "
                f"known: {sorted(base)} (see conf/defaults.toml)"
            )
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _merge(base[key], value, f"{where}.{key}" if where else key)
        else:
            out[key] = value
    return out


def load(user_file: str | os.PathLike | None = None) -> dict:
    """The defaults, with the settings of `user_file` (same layout, any subset) on top."""
    conf = tomllib.loads(DEFAULTS.read_text())
    if user_file is None:
        return conf
    try:
        with open(user_file, "rb") as f:
            user = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"--conf {user_file}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--conf {user_file}: not valid TOML ({e})") from None
    try:
        return _merge(conf, user, "")
    except ValueError as e:
        raise ValueError(f"--conf {user_file}: {e}") from None


def parse_with_settings(parser, argv):
    """`parser`'s arguments plus a `--conf FILE` option, and `settings`: the defaults with that
    file over them (for `aef-zonal sql` and `plot`: the spark.hadoop.fs.s3a.* keys of an s3://
    output)."""
    parser.add_argument(
        "--conf",
        metavar="FILE",
        help="TOML file over conf/defaults.toml: [spark.conf] with the "
        "spark.hadoop.fs.s3a.* settings of an s3:// output",
    )
    args = parser.parse_args(argv)
    try:
        args.settings = load(args.conf)
    except ValueError as e:
        parser.error(str(e))
    return args


def executor_env(conf: dict | None = None) -> dict[str, str]:
    """The environment the settings give the executors' Python workers (spark.executorEnv.*)."""
    prefix = "spark.executorEnv."
    return {
        k.removeprefix(prefix): str(v)
        for k, v in (conf or load())["spark"]["conf"].items()
        if k.startswith(prefix)
    }


# Sedona's build for each Spark line it runs on: its artifacts' suffix
SPARK_LINES = {"3.5": "3.5_2.12", "4.0": "4.0_2.13"}


def sedona_coordinates(conf: dict, spark_version: str | None = None) -> list[str]:
    """The Maven coordinates of Sedona's jars for a Spark version (default: pyspark's)."""
    if spark_version is None:
        from pyspark import __version__ as spark_version
    line = SPARK_LINES.get(".".join(spark_version.split(".")[:2]))
    if line is None:
        raise JobError(
            f"Spark {spark_version}: aef-zonal runs on Spark "
            f"{' and '.join(sorted(SPARK_LINES))} (README: Which Spark)"
        )
    return [c.format(spark=line) for c in conf["spark"]["sedona_jars"]]


def sedona_jars(conf: dict | None = None) -> list[Path]:
    """The jar files of the Sedona coordinates in conf, from AEF_ZONAL_JARS (a folder) or
    .cache/jars."""
    folder = Path(os.environ.get("AEF_ZONAL_JARS", JAR_DIR))
    jars = []
    for coord in sedona_coordinates(conf or load()):
        _, artifact, version = coord.split(":")
        jar = folder / f"{artifact}-{version}.jar"
        if not jar.exists():
            raise FileNotFoundError(
                f"Sedona jar {jar} is missing; run `make setup` to fetch it "
                "(or point AEF_ZONAL_JARS at a folder holding it)"
            )
        jars.append(jar)
    return jars


def s3a_jars() -> list[Path]:
    """Hadoop's S3A connector and Spark's committer binding: the jars `make setup` copied from
    tools/s3a/pom.xml into .cache/jars/s3a (or AEF_ZONAL_JARS/s3a)."""
    folder = Path(os.environ.get("AEF_ZONAL_JARS", JAR_DIR)) / "s3a"
    jars = sorted(folder.glob("*.jar"))
    if not (folder / ".fetched").exists() or not jars:
        raise FileNotFoundError(
            f"the S3A jars are missing from {folder}; run `make setup` to fetch "
            "them (tools/s3a/pom.xml)"
        )
    return jars


def jar_settings(conf: dict, s3: bool = False) -> dict[str, str]:
    """The Spark settings that put the JVM side on a session the job starts: the local cache's
    jars (`make setup`, or the folder AEF_ZONAL_JARS names), else their Maven coordinates for
    Spark to resolve once into its Ivy cache (spark.jars.packages); S3A's only for a run that
    names an s3 URL, as they are many."""
    if "AEF_ZONAL_JARS" in os.environ or JAR_DIR.is_dir():
        try:
            return {"spark.jars": ",".join(str(j) for j in sedona_jars(conf) + s3a_jars())}
        except FileNotFoundError as e:
            raise JobError(str(e)) from e
    sedona = sedona_coordinates(conf)
    if not s3:
        return {"spark.jars.packages": ",".join(sedona)}
    spark = conf["spark"]
    return {
        "spark.jars.packages": ",".join([*sedona, *spark["s3a_packages"]]),
        "spark.jars.excludes": ",".join(spark["s3a_excludes"]),
    }


def class_archive_options() -> list[str]:
    """The driver JVM's options that map the class archive tools/class_archive.py built, when it
    exists (AEF_ZONAL_CLASS_ARCHIVE, or .cache/jvm/aef-zonal.jsa): Spark and Sedona's classes
    then load already parsed and verified. An archive another JDK or class path wrote is
    ignored by the JVM, silently."""
    archive = Path(os.environ.get("AEF_ZONAL_CLASS_ARCHIVE", CLASS_ARCHIVE))
    if not archive.is_file():
        return []
    return [f"-XX:SharedArchiveFile={archive}", "-Xlog:cds=off", "-Xlog:cds+dynamic=off"]


def jit_options(field_years: int | None, conf: dict) -> list[str]:
    """The driver JVM's compilers for a run of `field_years` (None: not known before the JVM
    starts): C1 only for a short run, the JVM's default C1 and C2 from [spark]
    c2_from_field_years on (conf/defaults.toml says why)."""
    c2_from = conf["spark"]["c2_from_field_years"]
    if c2_from == 0 or (field_years is not None and field_years >= c2_from):
        return []
    return ["-XX:TieredStopAtLevel=1"]

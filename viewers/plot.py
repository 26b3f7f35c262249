"""aef-zonal plot: map.png and pca.png of one year of an aef-zonal output.

Read with pyarrow and drawn with matplotlib: no Spark, a few seconds for ~10^5 fields.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from aef_zonal import config, dataset, filesystem
from aef_zonal.dataset import OutputError
from aef_zonal.query import output_years

WIDTH_IN, DPI = 10.0, 130  # 1300 px wide
MAX_MAP_HEIGHT_IN = 12.0
NO_PIXEL = (0.82, 0.82, 0.82, 1.0)


def load_year(out, year: int, settings: dict | None = None):
    """(GeoDataFrame of the year's fields, PCA model): geometry, feature_id, label, count, rgb, mean."""
    import geopandas as gpd
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    years = output_years(out, settings)
    if year not in years:
        raise OutputError(f"year {year} is not in {out}; it has {', '.join(map(str, years))}")
    fs, root = filesystem.arrow_fs(str(out), settings)
    folder = filesystem.join(root, dataset.year_folder(year))
    data = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive")
    missing = {"geometry", "feature_id", "count", "mean", "pca_components", "label"} - set(
        data.schema.names
    )
    if missing:
        raise OutputError(
            f"{folder} is not an aef-zonal output: column(s) {sorted(missing)} missing"
        )
    model_path = filesystem.join(root, dataset.MODEL)
    if fs.get_file_info(model_path).type != pafs.FileType.File:
        raise OutputError(
            f"{filesystem.join(str(out), dataset.MODEL)} is missing; the job writes "
            "it next to the partitions"
        )
    with fs.open_input_stream(model_path) as f:
        model = json.loads(f.read())
    t = data.to_table(
        columns=["geometry", "feature_id", "label", "count", "pca_components", "mean"]
    )
    gdf = gpd.GeoDataFrame(
        t.drop_columns(["geometry"]).to_pandas(),
        geometry=gpd.GeoSeries.from_wkb(t["geometry"].to_numpy(zero_copy_only=False)),
        crs="EPSG:4326",
    )
    return gdf, model


def listed_without_pixels(out, year: int, settings: dict | None = None) -> set[int]:
    """The feature_ids of the year's field-years the output lists in its WITHOUT_PIXELS table
    (none for an output without one)."""
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, root = filesystem.arrow_fs(str(out), settings)
    path = filesystem.join(root, dataset.WITHOUT_PIXELS)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return set()
    t = pq.read_table(path, filesystem=fs, columns=["feature_id", "time"])
    return set(t.filter(pc.equal(t["time"], dataset.time_value(year)))["feature_id"].to_pylist())


def rgba(gdf) -> np.ndarray:
    """Each field's pca_components as an RGBA colour; grey where the field has no valid pixel."""
    colors = np.tile(NO_PIXEL, (len(gdf), 1))
    has = gdf["pca_components"].notna().to_numpy()
    if has.any():
        colors[has, :3] = np.stack(gdf.loc[has, "pca_components"].to_numpy())
    return colors


def save_png(fig, path: str, settings: dict | None = None) -> None:
    """Save as a 256-colour PNG: a few times smaller than matplotlib's RGBA and alike to the eye."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    plt.close(fig)
    buf.seek(0)
    png = io.BytesIO()
    Image.open(buf).convert("RGB").quantize(
        256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    ).save(png, "PNG", optimize=True)
    write_file(path, png.getvalue(), settings)


def write_file(path: str, data: bytes, settings: dict | None = None) -> None:
    """`data` at `path`: a local file, or beside an s3:// output (its --conf's endpoint and keys)."""
    fs, where = filesystem.arrow_fs(path, settings)
    fs.create_dir(where.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(where) as f:
        f.write(data)


def _degrees(axis, hemi: tuple[str, str]):
    """Tick labels like 93.85°W with as many decimals as the tick spacing needs."""
    from matplotlib.ticker import FuncFormatter

    def label(v, _):
        locs = axis.get_majorticklocs()
        d = next(d for d in range(8) if np.allclose(np.round(locs, d), locs, rtol=0, atol=1e-9))
        return f"{abs(v):.{d}f}°{hemi[0] if v >= 0 else hemi[1]}"

    return FuncFormatter(label)


def _nice_km(km: float) -> float:
    """The largest of 1, 2, 5 × 10^k not above km."""
    exp = 10.0 ** np.floor(np.log10(km))
    return max(m * exp for m in (1, 2, 5) if m * exp <= km)


def plot_map(gdf, year: int, path: str, settings: dict | None = None, not_drawn: int = 0) -> None:
    """map.png; `not_drawn`: the year's fields without a valid pixel that the output lists
    beside its data (their outlines are not in it), said in the legend."""
    import matplotlib.pyplot as plt
    import shapely
    from matplotlib.patches import Patch
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar
    from pyproj import Geod

    xmin, ymin, xmax, ymax = gdf.total_bounds
    lat = (ymin + ymax) / 2
    # degrees of longitude are shorter by cos(lat): stretch y so that shapes keep their form
    aspect = 1 / np.cos(np.radians(lat))
    ratio = (ymax - ymin) * aspect / (xmax - xmin)
    # inches around the axes for tick labels, title and axis labels; tall regions get a narrower figure
    map_w = min(WIDTH_IN - 1.1, MAX_MAP_HEIGHT_IN / ratio)
    fig, ax = plt.subplots(
        figsize=(map_w + 1.1, map_w * ratio + 1.0), dpi=DPI, layout="constrained"
    )
    # large fields first so that the small ones they overlap stay visible (degrees² rank them well enough)
    order = np.argsort(-shapely.area(np.asarray(gdf.geometry.values)), kind="stable")
    gdf.iloc[order].plot(ax=ax, color=rgba(gdf)[order], linewidth=0)
    # outlines last, so a large field under smaller ones still shows where it is
    gdf.boundary.plot(ax=ax, color="0.2", linewidth=0.2)
    ax.margins(0.01)
    ax.set_aspect(aspect)
    ax.set_facecolor("white")
    ax.xaxis.set_major_formatter(_degrees(ax.xaxis, ("E", "W")))
    ax.yaxis.set_major_formatter(_degrees(ax.yaxis, ("N", "S")))
    ax.grid(True, color="0.55", linewidth=0.4, linestyle=":")
    ax.set_axisbelow(False)
    ax.tick_params(labelsize=9)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")

    km_per_deg = Geod(ellps="WGS84").line_length([0, 1], [lat, lat]) / 1000
    bar_km = _nice_km((xmax - xmin) * km_per_deg / 5)
    ax.add_artist(
        AnchoredSizeBar(
            ax.transData,
            bar_km / km_per_deg,
            f"{bar_km:g} km",
            loc="lower right",
            pad=0.5,
            borderpad=0.8,
            sep=4,
            frameon=True,
            size_vertical=(ymax - ymin) / 200,
        )
    )
    empty = int((gdf["count"] == 0).sum())
    handles = [
        Patch(facecolor=NO_PIXEL, edgecolor="0.2", label=f"no valid pixel ({empty} fields)")
    ][: 1 if empty else 0]
    if not_drawn:
        handles.append(
            Patch(
                facecolor="none",
                edgecolor="none",
                label=f"{not_drawn} fields without a valid pixel, not drawn "
                f"(listed in {dataset.WITHOUT_PIXELS}/)",
            )
        )
    if handles:
        fig.legend(handles=handles, loc="outside lower left", fontsize=9, frameon=False)
    ax.set_title(
        f"{len(gdf):,} fields, {year}: colour = PCA(3) of the mean embedding "
        "(R, G, B = PC1, PC2, PC3)",
        fontsize=11,
    )
    save_png(fig, path, settings)


def plot_pca(
    gdf, model: dict, year: int, path: str, sample: int, seed: int, settings: dict | None = None
) -> None:
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.colors import LinearSegmentedColormap

    valid = gdf[gdf["count"] > 0]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(valid), size=min(sample, len(valid)), replace=False))
    rows = valid.iloc[pick]
    # raw scores from the saved model: the stored components are clipped to [0, 1] for colour
    scores = (np.stack(rows["mean"].to_numpy()) - np.asarray(model["center"])) @ np.asarray(
        model["components"]
    )[:2].T
    evr = model.get("explained_variance_ratio", [np.nan, np.nan])

    fig, ax = plt.subplots(figsize=(WIDTH_IN, WIDTH_IN * 0.68), dpi=DPI, layout="constrained")
    ax.scatter(
        scores[:, 0],
        scores[:, 1],
        c=rgba(rows)[:, :3],
        s=float(np.clip(4e4 / len(rows), 3, 40)),
        linewidths=0,
        zorder=2,
    )
    # transparent where sparse, darker where dense: the colours stay readable under the overlay
    density = LinearSegmentedColormap.from_list("density", [(0, 0, 0, 0.02), (0, 0, 0, 0.32)])
    hb = ax.hexbin(
        scores[:, 0],
        scores[:, 1],
        gridsize=36,
        mincnt=1,
        bins="log",
        cmap=density,
        edgecolors=(0, 0, 0, 0.2),
        linewidths=0.4,
        zorder=3,
    )
    fig.colorbar(hb, ax=ax, shrink=0.8, pad=0.01, label="fields per hexagon")
    for label, pos in (
        rows.assign(x=scores[:, 0], y=scores[:, 1]).groupby("label")[["x", "y"]].median().iterrows()
    ):
        ax.annotate(
            label,
            (pos.x, pos.y),
            xytext=(0, 14),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=11,
            weight="bold",
            zorder=4,
            path_effects=[patheffects.withStroke(linewidth=3, foreground="white")],
        )
    ax.set_xlabel(f"PC1 ({evr[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({evr[1]:.0%} of variance)")
    ax.grid(True, color="0.85", linewidth=0.5, zorder=0)
    ax.margins(0.06, 0.1)
    shown = f"{len(rows):,} of {len(valid):,}" if len(rows) < len(valid) else f"all {len(valid):,}"
    ax.set_title(
        f"PCA of the fields' mean embeddings, {year}: {shown} fields with pixels\n"
        "colour = (PC1, PC2, PC3) as RGB, shading = density, labels at their median",
        fontsize=11,
    )
    save_png(fig, path, settings)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="aef-zonal plot",
        description="Draw one year of an aef-zonal output: map.png (fields in their PCA colour) "
        "and pca.png (PC1 vs PC2 with a density overlay).",
        epilog="example: aef-zonal plot out/result --year 2024 --to out/plots",
    )
    p.add_argument("out", help="output folder of `aef-zonal run`")
    p.add_argument("--year", type=int, help="year to draw (default: the latest in OUT)")
    p.add_argument(
        "--to",
        metavar="DIR",
        help="folder for the PNGs (default OUT/_plots/YEAR; "
        "readers of OUT skip folders starting with _)",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=20000,
        metavar="N",
        help="fields drawn in pca.png (default %(default)s; the map draws all)",
    )
    p.add_argument("--seed", type=int, default=42, help="sampling seed for pca.png")
    return config.parse_with_settings(p, argv)


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    args = parse_args(argv)
    try:
        year = args.year or output_years(args.out, args.settings)[-1]
        gdf, model = load_year(args.out, year, args.settings)
        if not (gdf["count"] > 0).any():
            raise OutputError(
                f"no field of {year} in {args.out} has a valid pixel: nothing to plot"
            )
        to = args.to or filesystem.join(args.out, "_plots", str(year))
        not_drawn = len(listed_without_pixels(args.out, year, args.settings) - set(gdf.feature_id))
        plot_map(gdf, year, filesystem.join(to, "map.png"), args.settings, not_drawn)
        plot_pca(
            gdf,
            model,
            year,
            filesystem.join(to, "pca.png"),
            args.sample,
            args.seed,
            args.settings,
        )
    except OutputError as e:
        print(f"aef-zonal plot: error: {e}", file=sys.stderr)
        return 2
    print(
        f"[aef-zonal] wrote {filesystem.join(to, 'map.png')} and {filesystem.join(to, 'pca.png')} "
        f"({len(gdf):,} fields, {year}"
        + (
            f"; {not_drawn:,} without a valid pixel, listed in {dataset.WITHOUT_PIXELS}/"
            if not_drawn
            else ""
        )
        + ")"
    )
    return 0

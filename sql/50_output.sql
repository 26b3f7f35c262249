-- input:  field_years (the fields' feature_id, geometry, label, kept: the input columns carried,
--         bbox; year, t): each field with each year it is reduced for,
--         stats (feature_id, year, count, inside, mean, the asked statistics, skipped_chunks;
--         change, change_from when asked); functions pca_rgb (the broadcast PCA model applied
--         to a batch of means) and hilbert_key (udfs/spark.py)
-- columns: "statistics", the asked statistics' columns but mean and the quantiles, and
--         "quantiles", the asked quantiles' (udfs/statistics.py's records say how each is taken)
-- output: output rows in the published schema, one per field and year; a row with count = 0
--         says why in `reason`, and `complete` is false when a skipped chunk held some of its pixels
-- The join hashes the field-years and streams the statistics, the larger side: a sort-merge join
-- sorts both, and sorting the statistics of millions of field-years spills.
SELECT /*+ SHUFFLE_HASH(f) */
  f.geometry,
  f.kept.*,
  :store                                                        AS source_store,
  gx                                                            AS global_x_offset,
  gy                                                            AS global_y_offset,
  gx - FLOOR(gx / :shard) * :shard                              AS local_x_offset,
  gy - FLOOR(gy / :shard) * :shard                              AS local_y_offset,
  IF(gx >= 0 AND gy >= 0 AND gx < :width AND gy < :height,
     CONCAT(:key_prefix, f.t, :key_sep, 0, :key_sep, FLOOR(gy / :shard), :key_sep, FLOOR(gx / :shard)),
     NULL)                                                      AS path,
  f.feature_id,
  -- present exactly where the geometry is (GeoParquet covering); an empty geometry has no
  -- extent: NaN in all four, which no range filter on bbox selects (NaN orders above every
  -- number in Spark and DuckDB, so `xmin <= ...` fails; IEEE comparisons in Arrow all fail)
  CASE WHEN f.geometry IS NULL THEN NULL
       WHEN f.xmin IS NULL THEN NAMED_STRUCT('xmin', DOUBLE('NaN'), 'ymin', DOUBLE('NaN'),
                                             'xmax', DOUBLE('NaN'), 'ymax', DOUBLE('NaN'))
       ELSE NAMED_STRUCT('xmin', f.xmin, 'ymin', f.ymin, 'xmax', f.xmax, 'ymax', f.ymax) END AS bbox,
  s.mean,
  pca_rgb(s.mean)                                               AS pca_components,
  IF(f.xmin IS NULL, NULL, hilbert_key((f.xmin + f.xmax) / 2, (f.ymin + f.ymax) / 2)) AS hilbert_key,
  {statistics}
  -- not SIZE(NULL): it is -1 where ANSI mode is off (Spark 3.5's default), NULL where it is on
  s.skipped_chunks IS NULL OR SIZE(s.skipped_chunks) = 0        AS complete,
  CASE WHEN s.count > 0 THEN NULL
       WHEN f.geometry IS NULL THEN 'null geometry'
       WHEN ST_IsEmpty(f.geometry) THEN 'empty geometry'
       WHEN f.xmax <= :xmin OR f.xmin >= :xmin + :width * :res
         OR f.ymin >= :ymax OR f.ymax <= :ymax - :height * :res THEN 'outside the store'
       WHEN SIZE(s.skipped_chunks) > 0 THEN 'chunk skipped (undecodable)'
       WHEN s.inside > 0 THEN 'no valid pixel (all nodata)'
       ELSE 'no pixel inside (smaller than the pixel rule)' END  AS reason,
  CONCAT(CAST(f.year AS STRING), '-01-01')                     AS time,
  f.label{quantiles}
FROM (SELECT *, CAST(FLOOR((xmin - :xmin) / :res) AS BIGINT) AS gx,
                CAST(FLOOR((:ymax - ymax) / :res) AS BIGINT) AS gy FROM {field_years}) f
LEFT JOIN {stats} s ON s.feature_id = f.feature_id AND s.year = f.year

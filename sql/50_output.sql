-- input:  fields (feature_id, layer_year, geometry, label, scores, bbox),
--         field_years (feature_id, layer_year, year, t): the years each field is reduced for,
--         stats (feature_id, year, count, statistics), pca_model (one broadcast row)
-- output: output rows in the published schema, one per field and year (count = 0 when no pixel)
SELECT /*+ BROADCAST(m) */
  f.geometry,
  f.score_mean,
  f.score_std,
  :store                                                        AS source_store,
  gx                                                            AS global_x_offset,
  gy                                                            AS global_y_offset,
  gx - FLOOR(gx / :shard) * :shard                              AS local_x_offset,
  gy - FLOOR(gy / :shard) * :shard                              AS local_y_offset,
  IF(gx >= 0 AND gy >= 0 AND gx < :width AND gy < :height,
     CONCAT('embeddings/c/', fy.t, '/0/', FLOOR(gy / :shard), '/', FLOOR(gx / :shard)), NULL) AS path,
  f.feature_id,
  NAMED_STRUCT('xmin', f.xmin, 'ymin', f.ymin, 'xmax', f.xmax, 'ymax', f.ymax) AS bbox,
  s.mean,
  IF(s.mean IS NULL, NULL, TRANSFORM(m.components, (w, k) -> CAST(LEAST(GREATEST(
      (AGGREGATE(ZIP_WITH(s.mean, w, (v, c) -> v * c), 0D, (acc, x) -> acc + x) - m.shift[k] - m.lo[k])
      / (m.hi[k] - m.lo[k]), 0D), 1D) AS FLOAT)))               AS pca_components,
  hilbert_key((f.xmin + f.xmax) / 2, (f.ymin + f.ymax) / 2)      AS hilbert_key,
  COALESCE(s.count, 0L)                                         AS count,
  s.std, s.min, s.max, s.sum, s.mean_normalized, s.valid_fraction, s.quantiles,
  CONCAT(CAST(fy.year AS STRING), '-01-01')                     AS time,
  f.label
FROM (SELECT *, CAST(FLOOR((xmin - :xmin) / :res) AS BIGINT) AS gx,
                CAST(FLOOR((:ymax - ymax) / :res) AS BIGINT) AS gy FROM fields) f
JOIN field_years fy ON f.feature_id = fy.feature_id AND f.layer_year <=> fy.layer_year
LEFT JOIN stats s ON s.feature_id = fy.feature_id AND s.year = fy.year
CROSS JOIN pca_model m

-- input:  fields_input  (the GeoParquet as read; optional columns added as NULL by the job)
-- output: fields        (one row per input field, typed, with its bbox and geometry type)
SELECT
  CAST(feature_id AS BIGINT)                 AS feature_id,
  geometry,
  COALESCE(CAST(label AS STRING), 'field')   AS label,
  CAST(score_mean AS FLOAT)                  AS score_mean,
  CAST(score_std AS FLOAT)                   AS score_std,
  CAST(layer_year AS INT)                    AS layer_year,
  ST_GeometryType(geometry)                  AS geom_type,
  ST_XMin(geometry)                          AS xmin,
  ST_YMin(geometry)                          AS ymin,
  ST_XMax(geometry)                          AS xmax,
  ST_YMax(geometry)                          AS ymax
FROM fields_input

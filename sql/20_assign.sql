-- input:  fields        (feature_id, layer_year, geometry, xmin, ymin, xmax, ymax)
-- output: field_chunks  (feature_id, layer_year, geometry, cy, cx, chunks): the inner chunks
--         whose footprint each field intersects, each with its field's geometry and how many
--         chunks the field touches
-- The spatial join of the fields with the store's chunk grid, without building the grid: a
-- field's bbox gives the chunks it may touch (most fields: one), and ST_Intersects with each
-- one's footprint keeps those it does. The rows carry the geometry, so the chunk tasks need no
-- join back to the fields.
WITH spans AS (
  SELECT feature_id, layer_year, geometry,
         GREATEST(CAST(FLOOR((:ymax - ymax) / :chunk_deg) AS INT), 0)               AS cy0,
         LEAST(CAST(FLOOR((:ymax - ymin) / :chunk_deg) AS INT), :chunk_rows - 1)   AS cy1,
         GREATEST(CAST(FLOOR((xmin - :xmin) / :chunk_deg) AS INT), 0)               AS cx0,
         LEAST(CAST(FLOOR((xmax - :xmin) / :chunk_deg) AS INT), :chunk_cols - 1)   AS cx1
  FROM {fields}
  WHERE geometry IS NOT NULL AND NOT ST_IsEmpty(geometry)
),
touched AS (
  SELECT feature_id, layer_year, geometry, cy, cx
  FROM (SELECT * FROM spans WHERE cy0 <= cy1 AND cx0 <= cx1)
  LATERAL VIEW EXPLODE(SEQUENCE(cy0, cy1)) r AS cy
  LATERAL VIEW EXPLODE(SEQUENCE(cx0, cx1)) c AS cx
  WHERE ST_Intersects(geometry,
                      ST_PolygonFromEnvelope(:xmin + cx * :chunk_deg, :ymax - (cy + 1) * :chunk_deg,
                                             :xmin + (cx + 1) * :chunk_deg, :ymax - cy * :chunk_deg))
)
SELECT *, COUNT(*) OVER (PARTITION BY feature_id, layer_year) AS chunks
FROM touched

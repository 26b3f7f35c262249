-- input:  fields        (feature_id, layer_year, geometry, xmin, ymin, xmax, ymax)
-- output: field_chunks  (feature_id, layer_year, geometry, cy, cx, chunks): the inner chunks
--         whose footprint each field intersects, with how many they are
-- The spatial join of the fields with the store's chunk grid, without building the grid: a
-- field's bbox gives the chunks it may touch (most fields: one), and ST_Intersects with each
-- one's footprint keeps those it does. Each row carries its field's geometry and chunk count,
-- so the chunk tasks need no join back to the fields and no count over a shuffle.
WITH spans AS (
  SELECT feature_id, layer_year, geometry,
         GREATEST(CAST(FLOOR((:ymax - ymax) / :chunk_deg) AS INT), 0)               AS cy0,
         LEAST(CAST(FLOOR((:ymax - ymin) / :chunk_deg) AS INT), :chunk_rows - 1)   AS cy1,
         GREATEST(CAST(FLOOR((xmin - :xmin) / :chunk_deg) AS INT), 0)               AS cx0,
         LEAST(CAST(FLOOR((xmax - :xmin) / :chunk_deg) AS INT), :chunk_cols - 1)   AS cx1
  FROM fields
  WHERE geometry IS NOT NULL AND NOT ST_IsEmpty(geometry)
),
touched AS (
  SELECT feature_id, layer_year, geometry,
         FILTER(TRANSFORM(SEQUENCE(0, (cy1 - cy0 + 1) * (cx1 - cx0 + 1) - 1),
                          i -> NAMED_STRUCT('cy', cy0 + i DIV (cx1 - cx0 + 1), 'cx', cx0 + i % (cx1 - cx0 + 1))),
                c -> ST_Intersects(geometry,
                       ST_PolygonFromEnvelope(:xmin + c.cx * :chunk_deg, :ymax - (c.cy + 1) * :chunk_deg,
                                              :xmin + (c.cx + 1) * :chunk_deg, :ymax - c.cy * :chunk_deg))) AS cells
  FROM spans
  WHERE cy0 <= cy1 AND cx0 <= cx1
)
SELECT feature_id, layer_year, geometry, cell.cy, cell.cx, SIZE(cells) AS chunks
FROM touched
LATERAL VIEW EXPLODE(cells) e AS cell

-- input:  fields        (feature_id, layer_year, geometry, xmin, ymin, xmax, ymax)
-- output: field_chunks  (feature_id, layer_year, cy, cx): the inner chunks whose footprint each field intersects
-- Only cells inside some field's bbox are built (never the global grid); the exact test is a
-- Sedona spatial join (ST_Intersects) of the fields with those cells' footprints.
WITH spans AS (
  SELECT feature_id, layer_year, geometry,
         GREATEST(CAST(FLOOR((:ymax - ymax) / :chunk_deg) AS INT), 0)               AS cy0,
         LEAST(CAST(FLOOR((:ymax - ymin) / :chunk_deg) AS INT), :chunk_rows - 1)   AS cy1,
         GREATEST(CAST(FLOOR((xmin - :xmin) / :chunk_deg) AS INT), 0)               AS cx0,
         LEAST(CAST(FLOOR((xmax - :xmin) / :chunk_deg) AS INT), :chunk_cols - 1)   AS cx1
  FROM fields
  WHERE geometry IS NOT NULL AND NOT ST_IsEmpty(geometry)
),
cells AS (
  SELECT DISTINCT cy, cx
  FROM (SELECT * FROM spans WHERE cy0 <= cy1 AND cx0 <= cx1)
  LATERAL VIEW EXPLODE(SEQUENCE(cy0, cy1)) r AS cy
  LATERAL VIEW EXPLODE(SEQUENCE(cx0, cx1)) c AS cx
),
footprints AS (
  SELECT cy, cx,
         ST_PolygonFromEnvelope(:xmin + cx * :chunk_deg, :ymax - (cy + 1) * :chunk_deg,
                                :xmin + (cx + 1) * :chunk_deg, :ymax - cy * :chunk_deg) AS footprint
  FROM cells
)
SELECT s.feature_id, s.layer_year, f.cy, f.cx
FROM spans s JOIN footprints f ON ST_Intersects(s.geometry, f.footprint)

-- input:  fields   (feature_id, layer_year, geometry, label, kept, xmin, ymin, xmax, ymax)
-- output: assigned (the same, cells, whole): the inner chunks whose footprint each field
--         intersects (`cells`, each (cy, cx); none for a null or empty geometry or one off the
--         store) and whether the field is finished by the reduce stage (`whole`: inside one
--         chunk; not when :change is asked of fields with their own year, whose years may lie
--         in different chunk tasks)
-- The spatial join of the fields with the store's chunk grid, without building the grid: a
-- field's bbox gives the chunks it may touch (most fields: one), and ST_Intersects with each
-- one's footprint keeps those it does. Field by field: no shuffle.
WITH spans AS (
  SELECT feature_id, layer_year, geometry, label, kept, xmin, ymin, xmax, ymax,
         GREATEST(CAST(FLOOR((:ymax - ymax) / :chunk_deg) AS INT), 0)               AS cy0,
         LEAST(CAST(FLOOR((:ymax - ymin) / :chunk_deg) AS INT), :chunk_rows - 1)   AS cy1,
         GREATEST(CAST(FLOOR((xmin - :xmin) / :chunk_deg) AS INT), 0)               AS cx0,
         LEAST(CAST(FLOOR((xmax - :xmin) / :chunk_deg) AS INT), :chunk_cols - 1)   AS cx1
  FROM {fields}
),
cells AS (
  SELECT feature_id, layer_year, geometry, label, kept, xmin, ymin, xmax, ymax,
         -- a null or empty geometry has null bounds: no cells
         IF(cy0 <= cy1 AND cx0 <= cx1,
            FILTER(FLATTEN(TRANSFORM(SEQUENCE(cy0, cy1),
                                     cy -> TRANSFORM(SEQUENCE(cx0, cx1),
                                                     cx -> NAMED_STRUCT('cy', cy, 'cx', cx)))),
                   c -> ST_Intersects(geometry,
                          ST_PolygonFromEnvelope(:xmin + c.cx * :chunk_deg, :ymax - (c.cy + 1) * :chunk_deg,
                                                 :xmin + (c.cx + 1) * :chunk_deg, :ymax - c.cy * :chunk_deg))),
            CAST(ARRAY() AS ARRAY<STRUCT<cy: INT, cx: INT>>)) AS cells
  FROM spans
)
SELECT *, SIZE(cells) = 1 AND NOT (:change AND layer_year IS NOT NULL) AS whole
FROM cells

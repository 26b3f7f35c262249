-- input:  field_chunks (feature_id, layer_year, geometry, cy, cx, chunks)
-- output: chunk_tasks  (cy, cx, fields): one row per inner chunk with every field it must reduce,
--         each field as (feature_id, wkb, years, chunks); the reduce UDF reads the chunk once per
--         year; `chunks` (how many chunks the field touches) lets workers report field-years done
SELECT cy, cx,
       COLLECT_LIST(NAMED_STRUCT(
         'feature_id', feature_id,
         'wkb', ST_AsBinary(geometry),
         'years', CASE WHEN layer_year IS NULL THEN :years ELSE ARRAY(layer_year) END,
         'chunks', chunks)) AS fields
FROM {field_chunks}
GROUP BY cy, cx

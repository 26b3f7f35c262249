-- input:  field_chunks (feature_id, layer_year, cy, cx), fields (feature_id, layer_year, geometry)
-- output: chunk_tasks  (cy, cx, fields): one row per inner chunk with every field it must reduce,
--         each field as (feature_id, wkb, years, chunks); the reduce UDF reads the chunk once per
--         year; `chunks` (how many chunks the field touches) lets workers report field-years done
SELECT fc.cy, fc.cx,
       COLLECT_LIST(NAMED_STRUCT(
         'feature_id', f.feature_id,
         'wkb', ST_AsBinary(f.geometry),
         'years', CASE WHEN f.layer_year IS NULL THEN :years ELSE ARRAY(f.layer_year) END,
         'chunks', fc.chunks)) AS fields
FROM (SELECT *, COUNT(*) OVER (PARTITION BY feature_id, layer_year) AS chunks FROM field_chunks) fc
JOIN fields f ON fc.feature_id = f.feature_id AND fc.layer_year <=> f.layer_year
GROUP BY fc.cy, fc.cx

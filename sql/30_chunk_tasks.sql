-- input:  assigned    (feature_id, layer_year, geometry, label, kept, xmin, ymin, xmax, ymax,
--                      cells, whole)
-- output: chunk_tasks (cy, cx, fields): one row per inner chunk with every field it must reduce,
--         each field as (feature_id, wkb, years, chunks, whole, label, kept, xmin, ymin, xmax,
--         ymax): the reduce UDF reads the chunk once per year; `chunks` (how many chunks the
--         field touches) lets workers report field-years done; a whole field (inside this chunk)
--         leaves the task as its published rows, which carry its label, kept columns and bounds
--         (null for the others); the rows' geometry is `wkb`
SELECT cell.cy AS cy, cell.cx AS cx,
       COLLECT_LIST(NAMED_STRUCT(
         'feature_id', feature_id,
         'wkb', ST_AsBinary(geometry),
         'years', CASE WHEN layer_year IS NULL THEN :years ELSE ARRAY(layer_year) END,
         'chunks', SIZE(cells),
         'whole', whole,
         'label', IF(whole, label, NULL),
         'kept', IF(whole, kept, NULL),
         'xmin', IF(whole, xmin, NULL),
         'ymin', IF(whole, ymin, NULL),
         'xmax', IF(whole, xmax, NULL),
         'ymax', IF(whole, ymax, NULL))) AS fields
FROM {assigned} LATERAL VIEW EXPLODE(cells) c AS cell
GROUP BY cell.cy, cell.cx

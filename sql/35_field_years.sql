-- input:  assigned    (feature_id, layer_year, geometry, label, kept, xmin, ymin, xmax, ymax,
--                      whole): layer_year is the field's own year, or NULL
--         run_years   (year): the years of this run
-- output: field_years (feature_id, year, geometry as WKB, label, kept, xmin, ymin, xmax, ymax):
--         the field-years the reduce stage does not finish (fields spanning chunks, or in none),
--         every run year for a field without its own year, else that year alone; with the
--         field's columns, so that the output needs no join back to the fields
SELECT f.feature_id, y.year, ST_AsBinary(f.geometry) AS geometry, f.label, f.kept,
       f.xmin, f.ymin, f.xmax, f.ymax
FROM {assigned} f CROSS JOIN {run_years} y
WHERE NOT f.whole AND (f.layer_year IS NULL OR f.layer_year = y.year)

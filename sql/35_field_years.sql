-- input:  fields      (feature_id, layer_year, ...): layer_year is the field's own year, or NULL
--         run_years   (year, t): the years of this run and their time index in the store
-- output: field_years (fields' columns, year, t): the field-years to reduce and write, every
--         run year for a field without its own year, else that year alone; with the field's
--         columns, so that the output needs no join back to the fields (a shuffle of geometries)
SELECT f.*, y.year, y.t
FROM {fields} f CROSS JOIN {run_years} y
WHERE f.layer_year IS NULL OR f.layer_year = y.year

-- input:  merged   (feature_id, year, count, ... statistics): field-years that span chunks,
--                   finished from their grouped partials (sql/40_aggregate.sql, udfs/finish.py)
--          partials (feature_id, year, chunks, finished, ...): a field inside one chunk carries
--                   its statistics from the reduce stage, finished by the same udfs/finish.py
-- output: stats    (feature_id, year, count, inside, mean, the asked statistics (udfs/statistics.py's
--                   records, in their order), skipped_chunks): one row per field-year
SELECT * FROM {merged}
UNION ALL
SELECT feature_id, year, finished.* FROM {partials} WHERE chunks = 1

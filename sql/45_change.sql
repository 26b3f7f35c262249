-- input:  stats  (feature_id, year, count, mean, ...): one row per field-year (udfs/finish.py)
-- output: stats_change (stats' columns, previous_mean, change_from, change): `change` is
--         1 - cosine similarity of the field's mean with its mean in the latest earlier year of
--         the run that has a valid pixel, `change_from` that year; both NULL in the field's first
--         year, without such a year, or without a valid pixel itself. Fields of per-year layers
--         are the same field when their feature_id is.
WITH previous AS (
  SELECT *,
         IF(count > 0, LAST(IF(count > 0, year, NULL), TRUE) OVER w, NULL) AS change_from,
         IF(count > 0, LAST(IF(count > 0, mean, NULL), TRUE) OVER w, NULL) AS previous_mean
  FROM {stats}
  WINDOW w AS (PARTITION BY feature_id ORDER BY year ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
)
SELECT *,
       1 - AGGREGATE(ZIP_WITH(mean, previous_mean, (a, b) -> a * b), 0D, (s, x) -> s + x)
           / SQRT(AGGREGATE(mean, 0D, (s, x) -> s + x * x)
                  * AGGREGATE(previous_mean, 0D, (s, x) -> s + x * x)) AS change
FROM previous

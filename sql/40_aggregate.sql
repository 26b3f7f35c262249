-- input:  partials (feature_id, year, count, s1, s2, umin, umax): integer sums per field and chunk
-- output: stats    (feature_id, year, count, sum, mean, std, min, max) per field and year
-- Integer sums merge exactly; value = :a * u + :b turns them into statistics. The variance
-- n*S2 - S1^2 is formed in DECIMAL(38,0), exactly, before the one division.
WITH merged AS (
  SELECT feature_id, year,
         SUM(count) AS count,
         AGGREGATE(COLLECT_LIST(s1), ARRAY_REPEAT(0L, :bands), (acc, x) -> ZIP_WITH(acc, x, (p, q) -> p + q)) AS s1,
         AGGREGATE(COLLECT_LIST(s2), ARRAY_REPEAT(0L, :bands), (acc, x) -> ZIP_WITH(acc, x, (p, q) -> p + q)) AS s2,
         AGGREGATE(COLLECT_LIST(umin), ARRAY_REPEAT(:big, :bands), (acc, x) -> ZIP_WITH(acc, x, (p, q) -> LEAST(p, q))) AS umin,
         AGGREGATE(COLLECT_LIST(umax), ARRAY_REPEAT(-:big, :bands), (acc, x) -> ZIP_WITH(acc, x, (p, q) -> GREATEST(p, q))) AS umax
  FROM partials
  GROUP BY feature_id, year
)
SELECT feature_id, year, count,
       IF(count > 0, TRANSFORM(s1, s -> :a * s + :b * count), NULL)                     AS sum,
       IF(count > 0, TRANSFORM(s1, s -> :a * s / count + :b), NULL)                     AS mean,
       IF(count > 0, ZIP_WITH(s1, s2, (p, q) ->
           :a * SQRT(CAST(CAST(count AS DECIMAL(38, 0)) * q - CAST(p AS DECIMAL(38, 0)) * p AS DOUBLE)) / count),
          NULL)                                                                        AS std,
       IF(count > 0, TRANSFORM(umin, u -> :a * u + :b), NULL)                           AS min,
       IF(count > 0, TRANSFORM(umax, u -> :a * u + :b), NULL)                           AS max
FROM merged

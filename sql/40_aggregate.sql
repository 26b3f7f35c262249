-- input:  partials (feature_id, year, count, inside, s1, s2, umin, umax, hkeys, hcounts, skipped,
--         chunks): sums per field and chunk (integers; doubles for coverage-weighted pixels)
-- output: stats    (feature_id, year, count, inside, sum, mean, std, min, max, mean_normalized,
--         valid_fraction, quantiles, skipped_chunks) per field and year
-- value = :a * u + :b turns the sums into statistics. Integer sums merge exactly and the
-- variance n*S2 - S1^2 is formed exactly before the one division: in doubles while every term
-- stays below 2^53 (count <= :double_exact_count), in DECIMAL(38,0) (slow) beyond; histograms merge
-- by concatenation and quantiles(...) adds their counts. A field inside one chunk (`chunks` = 1,
-- most of them) has a single partial per year: it skips the grouping (no shuffle). Statistics
-- not asked for (:extremes, :sums, :normalized false) are NULL constants, so Spark never
-- evaluates their per-band lambdas.
WITH lists AS (
  SELECT feature_id, year,
         SUM(count) AS count, SUM(inside) AS inside,
         COLLECT_LIST(s1) AS l1, COLLECT_LIST(s2) AS l2,
         IF(:extremes, COLLECT_LIST(umin), NULL) AS lmin, IF(:extremes, COLLECT_LIST(umax), NULL) AS lmax,
         FLATTEN(COLLECT_LIST(hkeys)) AS hkeys, FLATTEN(COLLECT_LIST(hcounts)) AS hcounts,
         COLLECT_SET(skipped) AS skipped_chunks
  FROM partials
  WHERE chunks > 1
  GROUP BY feature_id, year
),
merged AS (
  SELECT feature_id, year, count, inside, hkeys, hcounts, skipped_chunks,
         AGGREGATE(SLICE(l1, 2, SIZE(l1)), l1[0], (acc, x) -> ZIP_WITH(acc, x, (p, q) -> p + q)) AS s1,
         AGGREGATE(SLICE(l2, 2, SIZE(l2)), l2[0], (acc, x) -> ZIP_WITH(acc, x, (p, q) -> p + q)) AS s2,
         AGGREGATE(SLICE(lmin, 2, SIZE(lmin)), lmin[0], (acc, x) -> ZIP_WITH(acc, x, (p, q) -> LEAST(p, q))) AS umin,
         AGGREGATE(SLICE(lmax, 2, SIZE(lmax)), lmax[0], (acc, x) -> ZIP_WITH(acc, x, (p, q) -> GREATEST(p, q))) AS umax
  FROM lists
  UNION ALL
  SELECT feature_id, year, count, inside, hkeys, hcounts,
         IF(skipped IS NULL, ARRAY(), ARRAY(skipped)) AS skipped_chunks, s1, s2, umin, umax
  FROM partials
  WHERE chunks = 1
),
finished AS (
  SELECT feature_id, year, count, inside, hkeys, hcounts, skipped_chunks,
         IF(:sums AND count > 0, TRANSFORM(s1, s -> :a * s + :b * count), NULL)           AS sum,
         IF(count > 0, TRANSFORM(s1, s -> :a * s / count + :b), NULL)                     AS mean,
         IF(count > 0, ZIP_WITH(s1, s2, (p, q) -> IF(:weighted,
             :a * SQRT(GREATEST(q / count - POW(p / count, 2), 0D)),
             :a * SQRT(IF(count <= :double_exact_count,
                 CAST(count AS DOUBLE) * q - CAST(p AS DOUBLE) * p,
                 CAST(CAST(count AS DECIMAL(38, 0)) * CAST(q AS DECIMAL(38, 0))
                      - CAST(p AS DECIMAL(38, 0)) * CAST(p AS DECIMAL(38, 0)) AS DOUBLE))) / count)),
            NULL)                                                                        AS std,
         IF(:extremes AND count > 0, TRANSFORM(umin, u -> :a * u + :b), NULL)             AS min,
         IF(:extremes AND count > 0, TRANSFORM(umax, u -> :a * u + :b), NULL)             AS max
  FROM merged
)
SELECT feature_id, year, count, inside, sum, mean, std, min, max,
       IF(:normalized, TRANSFORM(mean, v -> v / norm), NULL)                       AS mean_normalized,
       count / inside                                                              AS valid_fraction,
       IF(:quantiles AND count > 0, quantiles(hkeys, hcounts), NULL)               AS quantiles,
       skipped_chunks
FROM (SELECT *, IF(:normalized, SQRT(AGGREGATE(mean, 0D, (acc, w) -> acc + w * w)), NULL) AS norm
      FROM finished)

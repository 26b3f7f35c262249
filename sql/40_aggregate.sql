-- input:  partials   (feature_id, year, count, inside, s1, s2, umin, umax, hkeys, hcounts, skipped):
--                     the sums of each field spanning chunks, per chunk (udfs/partials.py; integers,
--                     or doubles for coverage-weighted pixels)
-- output: partial_lists (feature_id, year, count, inside, l1, l2, lmin, lmax, hkeys, hcounts,
--                     skipped_chunks): per field-year, pixel counts summed and the per-chunk sums
--                     listed, for udfs/finish.py to merge and turn into statistics
-- A field inside one chunk was finished by the reduce stage. Histograms merge by concatenation
-- (repeated codes add up later).
SELECT feature_id, year,
       SUM(count) AS count, SUM(inside) AS inside,
       COLLECT_LIST(s1) AS l1, COLLECT_LIST(s2) AS l2,
       IF(:extremes, COLLECT_LIST(umin), NULL) AS lmin, IF(:extremes, COLLECT_LIST(umax), NULL) AS lmax,
       FLATTEN(COLLECT_LIST(hkeys)) AS hkeys, FLATTEN(COLLECT_LIST(hcounts)) AS hcounts,
       COLLECT_SET(skipped) AS skipped_chunks
FROM {partials}
GROUP BY feature_id, year

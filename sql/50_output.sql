-- input:  field_years (feature_id, year, geometry, label, kept, xmin, ymin, xmax, ymax): the
--         field-years the reduce stage did not finish (sql/35_field_years.sql),
--         stats (feature_id, year, count, inside, the finished statistics, skipped_chunks): those
--         of them with a pixel inside, merged by the aggregate stage (udfs/finish.py)
-- columns: "statistics", the finished statistics' columns (udfs/statistics.py's records);
--         "clustered": with change asked, each field's rows together in year order, as
--         udfs/rows.py's change takes them
-- output: each field-year's field and statistics side by side (null statistics: no pixel
--         inside), for udfs/rows.py to build its published row
-- The join hashes the field-years and streams the statistics, the larger side: a sort-merge join
-- sorts both, and sorting the statistics of millions of field-years spills.
SELECT /*+ SHUFFLE_HASH(f) */
  f.feature_id, f.year, f.geometry, f.label, f.kept, f.xmin, f.ymin, f.xmax, f.ymax,
  s.count, s.inside, {statistics} s.skipped_chunks
FROM {field_years} f
LEFT JOIN {stats} s ON s.feature_id = f.feature_id AND s.year = f.year
{clustered}

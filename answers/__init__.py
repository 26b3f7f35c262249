"""What an output answers: the fields most like a field (similar), groups of fields (cluster), and
whether the embeddings tell a column's classes apart (probe). Each runs in Spark where the output
is (local, HDFS, s3://) and returns Python values; `aef-zonal similar|cluster|probe` prints them
(commands.py)."""

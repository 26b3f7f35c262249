"""The stages of the job, in order (jobs/run.py chains them). Each takes the tables it needs and
returns (its table, its part of the run report); the SQL stages run their file in sql/."""

"""Orchestration of aef-zonal: the Spark job, the sample data and the command line."""

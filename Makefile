# Two commands do everything on a fresh machine (Python 3.11, Java 17, Maven):
#   make demo   set up, generate the built-in sample, run the job on it
#   make test   set up, run the test suite
PY      := .venv/bin/python
JARS    := .cache/jars
SAMPLE  := out/sample
RESULT  := out/result
ARTIFACTS := org.apache.sedona:sedona-spark-shaded-4.0_2.13:1.8.0 org.datasyslab:geotools-wrapper:1.8.0-33.1

.PHONY: setup demo test test-fast pyfiles
setup: .venv/.installed $(JARS)/.fetched

.venv/.installed: pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# Sedona's JVM side, fetched once from Maven Central into a git-ignored cache
$(JARS)/.fetched:
	mkdir -p $(JARS)
	for a in $(ARTIFACTS); do \
	  mvn -q dependency:copy -Dartifact=$$a -DoutputDirectory=$(JARS) || exit 1; done
	touch $@

$(SAMPLE)/fields.parquet: | setup
	.venv/bin/aef-zonal sample $(SAMPLE)

demo: setup $(SAMPLE)/fields.parquet
	.venv/bin/aef-zonal run --store $(SAMPLE)/store.zarr --fields $(SAMPLE)/fields.parquet \
	  --out $(RESULT) --mode overwrite
	@echo "output: $(abspath $(RESULT))"

test: setup
	.venv/bin/pytest -q

# the tier without Spark (kernels, finish, store reader, options): under a minute
test-fast: .venv/.installed
	.venv/bin/pytest -q -m fast

# what executors import on a cluster (spark-submit --py-files dist/aef_zonal.zip), docs/deploy.md
pyfiles:
	python3 tools/pyfiles.py dist/aef_zonal.zip

# Two commands do everything on a fresh machine (Python 3.11, Java 17, Maven):
#   make demo   set up, generate the built-in sample, run the job on it
#   make test   set up, run the test suite
PY      := .venv/bin/python
JARS    := .cache/jars
SAMPLE  := out/sample
RESULT  := out/result
NPM     := .cache/npm
ARCHIVE := .cache/jvm/aef-zonal.jsa
DECK    := @deck.gl/core@9.4.0 @deck.gl/layers@9.4.0 deck.gl@9.4.0
ARTIFACTS := org.apache.sedona:sedona-spark-shaded-4.0_2.13:1.8.0 org.datasyslab:geotools-wrapper:1.8.0-33.1

.PHONY: setup demo test test-fast pyfiles browser
setup: .venv/.installed $(JARS)/.fetched $(JARS)/s3a/.fetched $(NPM)/.fetched $(ARCHIVE)

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

# S3A (hadoop-aws at pyspark's Hadoop 3.4.1, the AWS SDK modules it calls, Spark's committer
# binding): the artifacts of tools/s3a/pom.xml with their dependencies, ~10 MB in 36 jars
$(JARS)/s3a/.fetched: tools/s3a/pom.xml
	mkdir -p $(JARS)/s3a
	mvn -q -f tools/s3a/pom.xml dependency:copy-dependencies -DoutputDirectory=$(abspath $(JARS)/s3a)
	touch $@

# the driver JVM's classes as a short job loads them, mapped ready-made by later runs (what it saves:
# docs/benchmark.md, "Fixed cost"); rebuilt when the class path changes (tools/class_archive.py)
$(ARCHIVE): .venv/.installed $(JARS)/.fetched $(JARS)/s3a/.fetched tools/class_archive.py
	$(PY) tools/class_archive.py $@

# deck.gl's standalone bundles, inlined by `aef-zonal map` (viewers/webmap.py reads the tarballs)
$(NPM)/.fetched:
	mkdir -p $(NPM)
	cd $(NPM) && for p in $(DECK); do npm pack -q $$p > /dev/null || exit 1; done
	touch $@

# the browser test's Chromium (Debian's package), installed only where it is missing
browser:
	command -v chromium > /dev/null || { apt-get update -q && apt-get install -y -q chromium; }

$(SAMPLE)/fields.parquet: | setup
	.venv/bin/aef-zonal sample $(SAMPLE)

demo: setup $(SAMPLE)/fields.parquet
	.venv/bin/aef-zonal run --store $(SAMPLE)/store.zarr --fields $(SAMPLE)/fields.parquet \
	  --out $(RESULT) --mode overwrite
	.venv/bin/aef-zonal plot $(RESULT) --to $(RESULT)/_plots
	.venv/bin/aef-zonal map $(RESULT) --to $(RESULT)/_plots/map.html
	@echo "output: $(abspath $(RESULT))"
	@echo "pictures: $(foreach f,map.png pca.png map.html,$(abspath $(RESULT))/_plots/$(f))"

test: setup browser
	.venv/bin/pytest -q

# the tier without Spark (kernels, finish, store reader, options): under a minute
test-fast: .venv/.installed
	.venv/bin/pytest -q -m fast

# what executors import on a cluster (spark-submit --py-files dist/aef_zonal.zip), docs/deploy.md
pyfiles: .venv/.installed
	$(PY) tools/pyfiles.py dist/aef_zonal.zip

"""spark-submit's entry point: `spark-submit …/aef_zonal/submit.py ARGS` runs the job with
the options of `aef-zonal run` (the package installed, or given with --py-files)."""

import sys

from aef_zonal.run import main

if __name__ == "__main__":
    sys.exit(main())

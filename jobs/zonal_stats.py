"""spark-submit's entry point: `spark-submit jobs/zonal_stats.py ...` runs the job (jobs/run.py)
with the options of `aef-zonal run`."""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and __package__ is None:  # spark-submit runs this file as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())

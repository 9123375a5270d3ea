"""``python -m simlib.train --spec spec.json --data data.json``: one GRPO run (also under ``accelerate launch``)."""
import sys

from simlib.train.run import main

sys.exit(main())

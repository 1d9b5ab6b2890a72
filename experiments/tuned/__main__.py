import sys

from experiments.tuned import main

sys.exit(main())

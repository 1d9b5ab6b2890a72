import sys

from experiments.lr_sensitivity import main

sys.exit(main())

import sys

from capdistill.cli import main

sys.exit(main())

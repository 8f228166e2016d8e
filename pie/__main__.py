"""`python -m pie <stage>`: the same dispatcher as the `pie` console script."""
import sys

from pie import commands

sys.exit(commands.main())

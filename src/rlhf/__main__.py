"""`python -m rlhf ...` (and `accelerate launch -m rlhf ...`) runs the command line."""

import sys

from rlhf.cli import main
from rlhf.parallel import end_processes

try:
    code = main()
finally:
    end_processes()
sys.exit(code)

"""`python -m hf_iqa ...` is `hf-iqa ...`."""

import sys

from hf_iqa.cli import main

if __name__ == "__main__":
    sys.exit(main())

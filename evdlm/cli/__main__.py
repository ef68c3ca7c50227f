"""``python -m evdlm.cli``: the same as the ``evdlm`` console script."""

from evdlm.cli import main

main()

"""`python -m app.cli`: the same as the `clv` console script."""

from app.cli import main

main()

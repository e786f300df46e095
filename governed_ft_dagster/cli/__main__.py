"""`python -m governed_ft_dagster.cli`: the same command as `governed-ft`."""

from governed_ft_dagster.cli import main

main()

from cellfactory.cli import cli

cli()

"""One module per subcommand: ``run(...)`` wires recipe, models, pyramid math and artifacts."""

"""The command line: thin modules, one per noun, that parse, call the Fleet façade and render."""

"""Container runtime drivers: pure command builders and output parsers for ctr and nerdctl."""

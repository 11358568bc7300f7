"""betavae."""

"""AWX / Automation Platform (issue 16): the built collection, the execution environment, credential types, slices."""

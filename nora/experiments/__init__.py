"""The book's lab: the code that re-runs the papers' experiments on top of the ``nora`` library."""

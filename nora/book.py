"""``python -m nora.book run|build|vendor``: the book runner, an alias of ``python -m nora.experiments.book``.

The runner is lab code (:mod:`nora.experiments.book`); this module only forwards the command line
to it, so importing ``nora.book`` loads nothing from the lab.
"""

if __name__ == "__main__":
    import runpy

    runpy.run_module("nora.experiments.book", run_name="__main__", alter_sys=True)

"""One script per figure: draws stored results, never computes (installed as ``cotscope.figures``)."""

if __name__ == "figures":  # the pre-0.2 top-level name, from a repository checkout: alias it (deprecated)
    from cotscope._compat import alias_old_package

    alias_old_package(__name__)

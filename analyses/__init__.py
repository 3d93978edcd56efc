"""Arrays in, numbers out: stores, directions, spectra, sweeps, priors, exports; never loads a model (installed as ``cotscope.analyses``)."""

if __name__ == "analyses":  # the pre-0.2 top-level name, from a repository checkout: alias it (deprecated)
    from cotscope._compat import alias_old_package

    alias_old_package(__name__)

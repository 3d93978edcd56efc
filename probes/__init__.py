"""Everything that touches a model: loading, stimuli, collection, steering, attention capture (installed as ``cotscope.probes``)."""

if __name__ == "probes":  # the pre-0.2 top-level name, from a repository checkout: alias it (deprecated)
    from cotscope._compat import alias_old_package

    alias_old_package(__name__)

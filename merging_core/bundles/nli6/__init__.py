"""The ``nli6`` sample bundle: six NLI-style tasks on all-MiniLM-L6-v2 with six LoRA adapters.

``python -m merging_core.bundles.nli6 build`` regenerates ``sample_adapters/nli6`` (see its
README); :mod:`.tasks` holds the seeded task generators.
"""

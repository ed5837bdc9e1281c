"""wavepatch: diffusion (score-based) image priors for computational medical imaging.

Layout follows the data: ``io`` (files in and out, windowing) -> ``physics`` (forward operators, noise)
-> ``recon`` (classical solvers; later priors and samplers) -> ``metrics`` -> ``report``; ``cli`` only
parses arguments and calls them.
"""

__version__ = "0.1.0"

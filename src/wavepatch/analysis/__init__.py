"""Analysis code used by the benchmarks, not by the library: closed-form studies that explain measured results.

``gaussian_fields``: exact laws of SGM and WSGM sampling on stationary Gaussian fields (benchmarks/wsgm_gaussian.py).
Nothing under ``wavepatch`` outside this subpackage imports it.
"""

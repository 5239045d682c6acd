"""The conformance checks, one module per check (issue 21): ``shipped`` (check 8, the runs in
the dtypes users run), ``documented`` (check 9, the grid a configuration documents), ``usage``
(check 10, the img2img start) and ``baseline`` (the known-deviation file). The older checks 1-7
still live in :mod:`validation.conformance`."""

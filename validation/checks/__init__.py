"""The conformance checks, one module per check (issue 21). Checks 1-7 judge a configuration
on the algorithm driver (float64): ``invariants`` (1 and 6), ``same_grid`` (2), ``invariance``
(3), ``order`` (4), ``narrow`` (5), ``forward`` (7), ``inverse`` (1-5 of an inversion). Checks
8-10 and 11 run it as pipelines do: ``shipped`` (8, the dtypes users run), ``documented`` (9, the
grid a configuration documents), ``usage`` (10 and 11, the img2img start and inpainting loops).
``baseline`` is the known-deviation file, ``common`` what they share. The catalogue of
configurations and the report live in :mod:`validation.conformance`."""

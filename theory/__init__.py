"""diffusion_oracle.theory: SymPy derivations checked by the CAS (SymPy only, no NumPy).

The derivations arrive with the theory issue; this package is installed already so that the
layout, the packaging test and the import guard cover it from the start.
"""

"""Frame interpolation (FILM).

`counts` is pure arithmetic (no torch) so that parameter checks and infotexts can use it cheaply;
`film` finds and runs the model. Import the submodules directly.
"""

"""Export formats of a pruned run, one module each: each a function from a loaded model to a folder.

``fineprune.run.export`` chooses among them; the command line only parses.
"""

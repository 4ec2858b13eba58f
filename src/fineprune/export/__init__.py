"""Export formats of a pruned run, one module each: each a function from a loaded model to a folder.

:func:`fineprune.export.job.export` chooses among them and writes the model card (:mod:`fineprune.export.card`);
the command line only parses. This package's ``__init__`` imports nothing, so that the formats' small pieces (the
compact modeling file, graph names) load without the whole export job.
"""

"""Settings for nbval's re-run of the lessons (make test), kept out of the notebooks themselves."""

# nbval waits a fixed 5 s for a finished cell's output messages; a long cell's progress-bar updates can
# arrive later than that on a loaded machine ("Timeout of 5 seconds exceeded waiting for output").
NBVAL_OUTPUT_TIMEOUT_S = 120


# And a fixed 2,000 s for a cell to finish, which a long sampling cell passed on a machine running six other jobs:
# two threads of OpenMP that spin while other jobs hold the cores run many times slower than their share. A hung
# cell is still stopped, by CI's own limit; a slow one is not a failure.
NBVAL_CELL_TIMEOUT_S = 4 * 3600


def pytest_configure(config):
    if getattr(config.option, "nbval_cell_timeout", None) == 2000:  # nbval's default; one given on the command line stays
        config.option.nbval_cell_timeout = NBVAL_CELL_TIMEOUT_S


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S

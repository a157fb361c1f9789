"""Settings for nbval's re-run of the lessons (make test), kept out of the notebooks themselves."""

# nbval waits a fixed 5 s for a finished cell's output messages; a long cell's progress-bar updates can
# arrive later than that on a loaded machine ("Timeout of 5 seconds exceeded waiting for output").
NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S

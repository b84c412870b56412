"""From a finished search to results: test scores, statistics (pure numbers), labels, tables, figures and the
paper's published figures beside ours."""

"""The chapters' table builders and result-chosen sentences, one module per finding."""

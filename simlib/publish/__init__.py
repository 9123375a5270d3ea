"""From runs to the book: notebook helpers, figures, provenance, runner, CLI."""

"""simlib: an executable companion to "Is synthetic data good enough to train user simulators?"."""
__version__ = "0.1.0"

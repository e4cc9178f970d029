"""Framework integrations for sqltrack-core (Lightning, Hugging Face, Keras).

Each lives in its own module and imports its framework only when used; none is implemented yet.
"""

"""Training of world models (teacher, student base) with Lightning."""

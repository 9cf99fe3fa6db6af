"""Mixed-integer encodings of the IR and the solver back-ends that decide them."""

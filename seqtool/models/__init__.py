"""Neural network modules. Decoding code lives in seqtool.decoding, not here."""

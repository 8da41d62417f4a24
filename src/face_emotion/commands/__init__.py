"""One module per CLI verb (ultralytics-style modes): train, evaluate, predict, export, serve."""

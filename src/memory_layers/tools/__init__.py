"""The library's tools, beside it rather than in it: the benchmark (:mod:`.bench`, ``python -m memory_layers.bench``),
the GPU check (:mod:`.gpu_check`, ``python -m memory_layers.gpu_check``) and the roofline model both print against
(:mod:`.roofline`). Importing memory_layers loads none of them."""

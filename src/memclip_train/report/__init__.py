"""What the programs share to report their results: bootstrap intervals (:mod:`.bootstrap`), figures
(:mod:`.figures`), markdown tables (:mod:`.tables`) and the typed reader of ``eval synth``'s results
(:mod:`.synth_results`). The demo, the study, the sweep and pretraining build on it; it imports none of them."""

"""What the programs share to report their results: bootstrap intervals (:mod:`.bootstrap`), figures
(:mod:`.figures`), markdown tables (:mod:`.tables`), a run's metrics.jsonl read back (:mod:`.run_metrics`) and the
typed reader of ``eval synth``'s results (:mod:`.synth_results`). The demo, the study, the sweep, pretraining, the
plot program and the run card build on it; it imports none of them."""

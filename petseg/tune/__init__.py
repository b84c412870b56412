"""The Ray Tune runner: study configuration, per-variant search and ASHA, the trainable, running and reading a
search. `petseg.tune.config` and `petseg.tune.search_space` import no Ray, so `--dry-run` stays fast."""

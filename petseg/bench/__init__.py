"""Benchmarks of petseg itself, as library calls the experiments/ scripts make: the speed-up ablation
(`ablation`, `ablation_report`) and the learning-rate sampler benchmark (`sampler`, `sampler_report`), on the
pieces they share: the machine's description (`machine`), repeated step timing (`probe`), statistics over
repeats (`stats`) and Markdown tables (`markdown`)."""

"""Training: one loop (``loop.Trainer``) composed from parts (``parts``), with in-process parts (``inline``) and Ray
parts (``waltz_ray.runtime.driver``). Import the submodules; this package imports nothing heavy itself."""

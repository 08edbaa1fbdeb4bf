"""MLflow: one run per network trained, all under one parent run per study; a room a job.

- `store`: where the store is (`tracking_uri`), a client that waits while it is locked
  (`retry`, `PatientClient`) and the experiment created once, under a lock (`ensure_store`);
- `provenance`: where a run came from: the repository root, git commit, DVC experiment and
  stage (`source_tags`), and the prepared data set as a run input (`dataset_input`);
- `tracker`: the `Tracker`: a study's parent run, its networks' runs, base models, system
  metrics, repair after a kill, and pruning.

The report stage's summary on the parent run is `transferability.report`.
"""

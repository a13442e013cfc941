"""Running DUS jobs beyond one machine.

`ray_jobs`: a Ray cluster as the job backend (DUS_RAY_ADDRESS): the worker hands each claimed job to the cluster as a
Ray Job instead of starting a local process; `ray_view`: what the cluster has and which job runs where (the CLI's
`cluster status`, the Jobs page). Nothing here imports Ray until a cluster is configured.
"""

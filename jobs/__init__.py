"""The roof: the CLI (`jobs.cli`, `jobs.commands`) and the jobs that sequence the stages
(`jobs.monthly`). Nothing below imports it."""

"""Guest GPU work: execlists, workloads, scheduling, and the command scanner."""

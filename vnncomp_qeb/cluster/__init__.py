"""Scale-out on Ray: benchmark instances as Ray tasks, and one hard instance's MILP shares and
branch-and-bound batches on Ray workers. Imported only when ``--ray`` is given."""

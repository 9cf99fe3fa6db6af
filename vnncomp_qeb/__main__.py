from vnncomp_qeb.cli import main

raise SystemExit(main())

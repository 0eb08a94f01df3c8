from portero.cli import main

raise SystemExit(main())

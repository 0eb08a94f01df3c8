from portero.cli.main import main

raise SystemExit(main())

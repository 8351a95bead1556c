from diartune.cli import main

raise SystemExit(main())
